"""Device registry: who may publish, with which credentials, and what each device is.

Below the services (the bridge, the HJ 212 gateway and the detection service read it) and
above the adapters.
"""
