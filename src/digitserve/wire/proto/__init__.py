"""Generated gRPC stubs for digits.v1 and the KServe V2 protocol; regenerate with `generate.py`.

The .proto sources are in the repository's `protos/` folder; never edit the stubs by hand.
"""
