"""Generated protobuf and gRPC code for the ork.v1 API (scripts/codegen.sh)."""
