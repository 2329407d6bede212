"""The contrastive loss of an embedding run, from sentence-transformers: MultipleNegativesRankingLoss or GISTEmbedLoss
(each also in its cached, GradCache variant), optionally wrapped in MatryoshkaLoss. Training code path only."""

from __future__ import annotations

from sentence_transformers import SentenceTransformer
from sentence_transformers.sentence_transformer.losses import (
    CachedGISTEmbedLoss,
    CachedMultipleNegativesRankingLoss,
    GISTEmbedLoss,
    MatryoshkaLoss,
    MultipleNegativesRankingLoss,
)

from trainers.embedding.spec import EmbeddingConfig
from trainers.errors import ConfigError


def check_matryoshka_dims(dims: list[int] | None, model_dimension: int) -> None:
    """Every Matryoshka size must fit in the model's embedding: a ConfigError naming matryoshka_dims otherwise."""
    too_large = [dim for dim in dims or () if dim > model_dimension]
    if too_large:
        raise ConfigError("matryoshka_dims", f"matryoshka_dims: {too_large} larger than the model's embedding "
                                             f"dimension ({model_dimension})")


def build_loss(config: EmbeddingConfig, model: SentenceTransformer, guide: SentenceTransformer | None = None):
    """The configured loss. GIST's temperature is 1 / scale, like the ranking loss's scale, so `scale` /
    `temperature` mean the same for every loss."""
    if config.loss == "gist":
        loss = GISTEmbedLoss(model, guide, temperature=1.0 / config.loss_scale)
    elif config.loss == "cached_gist":
        loss = CachedGISTEmbedLoss(model, guide, temperature=1.0 / config.loss_scale,
                                   mini_batch_size=config.mini_batch_size)
    elif config.loss == "cached_mnrl":
        loss = CachedMultipleNegativesRankingLoss(model, scale=config.loss_scale,
                                                  mini_batch_size=config.mini_batch_size)
    else:
        loss = MultipleNegativesRankingLoss(model, scale=config.loss_scale)
    if config.matryoshka_dims:  # (checked against the model when it loaded: check_matryoshka_dims)
        loss = MatryoshkaLoss(model, loss, matryoshka_dims=config.matryoshka_dims)
    return loss
