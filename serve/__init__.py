"""ddpm-deploy as an HTTP image service on Ray Serve (``pip install 'ddpm-deploy[cpu,serve]'``).

``serve.app`` holds the deployments (an engine replica per device with a StepBatcher, a FastAPI
ingress; jobs in ``serve.jobs``), ``serve.config`` the service's configuration file, ``python -m serve`` starts it
(Ray in a network namespace of its own, ``serve.forward`` carrying the ingress out; ``serve.listeners`` says what
listens), ``serve.application`` is Ray Serve's application builder and ``serve.deploy`` writes the Serve config
file and a KubeRay RayService,
``python -m bench.load`` sends it a bounded Poisson stream, ``serve.netns`` runs commands in a network
namespace with nothing but loopback (how every test and benchmark of the service runs here).
"""
