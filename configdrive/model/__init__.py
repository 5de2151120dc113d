"""What a drive carries: the content model, read from the command line's files, laid out as
the config-drive-v2 tree or a NoCloud seed, or an existing drive's tree with files replaced."""
