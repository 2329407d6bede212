"""The gRPC contracts (package bugagaric.finetune.v1) and their generated code, committed.

Regenerate with `python -m protos.generate`; tests/test_protos.py fails when the committed code is stale.
"""
