"""``python -m ticklake.ingestors``: the same as ``ticklake ingest run``."""

from ticklake.ingestors.cli import run_command

if __name__ == "__main__":
    run_command(prog_name="python -m ticklake.ingestors")
