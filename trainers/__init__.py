"""Trainers: one sub-package per task type, plus the registry that maps a type name to its parts.

Importing this package (and the registry) is cheap: schemas and validators only. torch, transformers, trl, peft
and sentence-transformers are imported inside each type's training entry point (`python -m trainers.<type>`).
"""
