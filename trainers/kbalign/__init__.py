"""KBAlign: self-annotation of a knowledge base (short- and long-dependency question-answer pairs) and iterative
tuning with self-verification (arXiv 2411.14790)."""
