"""``python -m llmroute.cli``: the same as the ``llmroute`` command."""

from llmroute.cli import main

if __name__ == "__main__":
    main()
