"""The bundled experiment configs (the repository's top-level configs/, installed as ``diffrl.configs``)."""
