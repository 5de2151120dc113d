"""One metadata document judged: counted before it is parsed, parsed as RFC 8259 says,
checked against its JSON Schema and what a schema cannot say, and linted for what its
consumers would misread; every finding named by file and JSON pointer."""
