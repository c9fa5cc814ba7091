"""The models agentdeck can run: a catalogue in code (`catalogue.py`), what is installed in
`<home>/models/` (`manifest.py`), pulling from the package index, Hugging Face or a local
file (`pull.py` and one module per source, sharing `install.py`), the config key that
picks one (`use.py`) and a name to its file (`resolve.py`). No Textual here; the CLI is
app/commands/models.py.

Import the submodules directly: `agents.models.pull` brings in huggingface_hub lazily,
`agents.models.use` tomlkit and the config.
"""
