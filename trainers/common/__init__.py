"""Pieces shared by the language-model task types (sft now; dpo and kbalign reuse them).

`config`, `jsonl`, `rag_prompt`, `metrics`, `cli` and `model_loading` are cheap to import (model_loading imports
transformers inside its loaders only); `hf_callback`, `lora` and `training_args` import torch/transformers/peft and
belong to the training code path only.
"""
