"""What a chat request may hold (REST body and gRPC ChatRequest alike): one pydantic model, so the gateway's 400 and
the control plane's INVALID_ARGUMENT name the same field for the same mistake."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

MAX_QUESTION_CHARS = 4000
MAX_PASSAGES = 20
MAX_PASSAGE_CHARS = 8000
MAX_NEW_TOKENS = 1024
DEFAULT_NEW_TOKENS = 128


class ChatInput(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True)

    question: str = Field(min_length=1, max_length=MAX_QUESTION_CHARS,
                          description="the user's question (or, for an embedding task, the query)")
    passages: list[str] = Field(default_factory=list, max_length=MAX_PASSAGES,
                                description="retrieved passages put into the task's RAG prompt (ranked, for embedding)")
    model: Literal["tuned", "base"] = Field("tuned", description="answer with the fine-tuned model or its base")
    max_new_tokens: int = Field(DEFAULT_NEW_TOKENS, ge=1, le=MAX_NEW_TOKENS)

    @field_validator("question")
    @classmethod
    def _not_blank(cls, value: str) -> str:
        if not value.strip():
            raise ValueError("must not be blank")
        return value

    @field_validator("passages")
    @classmethod
    def _passage_lengths(cls, value: list[str]) -> list[str]:
        for passage in value:
            if len(passage) > MAX_PASSAGE_CHARS:
                raise ValueError(f"each passage may hold at most {MAX_PASSAGE_CHARS} characters")
        return value


class ChatInputError(ValueError):
    def __init__(self, field: str, message: str):
        super().__init__(message)
        self.field, self.message = field, message


def parse_chat_input(data: object) -> ChatInput:
    """The validated input, or ChatInputError naming the first field at fault."""
    if not isinstance(data, dict):
        raise ChatInputError("", "the chat request must be a JSON object")
    try:
        return ChatInput.model_validate(data)
    except ValidationError as exc:
        error = exc.errors()[0]
        loc = error.get("loc") or ("",)
        field = str(loc[0])
        where = ".".join(str(part) for part in loc)
        message = error["msg"] if error["type"] != "extra_forbidden" else "unknown field"
        raise ChatInputError(field, f"{where}: {message}") from None
