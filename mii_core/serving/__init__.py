"""Serving: the engine service (one loop thread per engine), persistent deployments (``serve``,
``client``, replicas, router) and the transport interface that front-end plugins implement."""
