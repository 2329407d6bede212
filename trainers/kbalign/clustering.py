"""Clusters of related chunks for long-range annotation, the reference code's way (long_dependency/detail_data.py):
MiniBatchKMeans over the chunk embeddings into `chunks // cluster_size` clusters (at least one), each capped at
`cluster_size` members, the ones nearest its centre. A cluster needs two members to relate anything."""

from __future__ import annotations

import warnings

import numpy as np


def cluster_chunks(embeddings: np.ndarray, cluster_size: int, seed: int) -> tuple[list[list[int]], dict[str, int]]:
    """(clusters: chunk indices, nearest the centre first; stats). Clusters of one chunk are left out."""
    from sklearn.cluster import MiniBatchKMeans

    n = len(embeddings)
    if n < 2:
        return [], {"clusters": 0, "clustered_chunks": 0, "singletons": n, "capped_out": 0}
    k = max(1, n // cluster_size)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # e.g. fewer distinct points than clusters in a tiny knowledge base
        kmeans = MiniBatchKMeans(n_clusters=k, random_state=seed, n_init=3, batch_size=1024).fit(embeddings)
    distance = np.linalg.norm(embeddings - kmeans.cluster_centers_[kmeans.labels_], axis=1)
    clusters: list[list[int]] = []
    singletons = capped_out = 0
    for label in range(k):
        members = sorted((int(i) for i in np.flatnonzero(kmeans.labels_ == label)), key=lambda i: distance[i])
        capped_out += max(0, len(members) - cluster_size)
        members = members[:cluster_size]
        if len(members) < 2:
            singletons += len(members)
            continue
        clusters.append(members)
    stats = {"clusters": len(clusters), "clustered_chunks": sum(map(len, clusters)), "singletons": singletons,
             "capped_out": capped_out}
    return clusters, stats
