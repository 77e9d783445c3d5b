"""One module per `hydralib` subcommand, each with ``add_arguments(parser)`` and ``run(args) -> exit code``."""
