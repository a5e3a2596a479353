"""HJ 212-2017 gateway: a TCP service for data loggers, producing onto the wire contract."""
