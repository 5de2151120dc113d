"""JSON Schemas (draft 2020-12) for everything that goes on a config drive; installed as ``configdrive.schemas``."""
