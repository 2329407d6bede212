"""The RAG prompt: numbered retrieved passages, then the question. SFT, DPO and KBAlign all use this one template,
so a model fine-tuned here sees the same prompt shape the RAG stack sends at inference."""

from __future__ import annotations

SYSTEM_PROMPT = "Answer the question using the retrieved passages when they are relevant."


def passages_of(retrieval_result: str | list[str] | None) -> list[str]:
    if retrieval_result is None:
        return []
    if isinstance(retrieval_result, str):
        return [retrieval_result] if retrieval_result.strip() else []
    return [p for p in retrieval_result if p.strip()]


def build_rag_prompt(query: str, retrieval_result: str | list[str] | None = None) -> str:
    """`query` alone when there are no passages; otherwise the passages numbered [1], [2], ... then the question."""
    passages = passages_of(retrieval_result)
    if not passages:
        return query
    numbered = "\n".join(f"[{i}] {p.strip()}" for i, p in enumerate(passages, start=1))
    return f"Passages:\n{numbered}\n\nQuestion: {query}"
