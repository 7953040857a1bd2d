from benchflow.cli import entrypoint

entrypoint()
