"""Device registry: who may publish, with which credentials, and what each device is.

Below the services (the bridge, the HJ 212 gateway and the detection service read it) and
above the adapters.

The gateway and other services look devices up through :class:`registry.store.RegistryStore`
(``get``, ``by_mn``) and check HJ 212 passwords with
:func:`registry.credentials.verify_password`; the bridge and the detector read the cached
:class:`registry.view.RegistryView`.
"""
