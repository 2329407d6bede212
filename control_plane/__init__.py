"""The control plane: task store, state machine, scheduler, agent registry, log/metric ingestion, gRPC servicers."""
