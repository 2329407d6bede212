"""`bugagaric`, the command line of BugAgaric Finetune: drives the platform through the gateway's REST API (never
gRPC), for people at a terminal and for scripts (`--json`)."""
