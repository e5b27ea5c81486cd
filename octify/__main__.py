"""``python -m octify``: the ``octify`` command."""
from .cli.main import main

main()
