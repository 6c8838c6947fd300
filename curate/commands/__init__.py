"""One module per `curate` subcommand: NAME, ORDER, HELP, DESCRIPTION, add_arguments(parser), main(args).

`curate.cli` discovers them, so a new command is a new module here and nothing else.
"""
