"""The bench's unit tests: `cd scripts && python3 -m unittest discover -s bench/tests -t .`"""
