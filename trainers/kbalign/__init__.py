"""KBAlign: self-annotation of a knowledge base (several short-range question-answer pairs per chunk, long-range
pairs over clusters of related chunks) and iterative tuning with self-verification over one learning-rate schedule,
with KB-QA evaluation after every round (arXiv 2411.14790; see README.md)."""
