"""ddpm-deploy for C and C++ services: the C ABI's Python side (:mod:`embed.host`); the C++ sources
(``include/``, ``src/``, ``examples/``, ``CMakeLists.txt``) live beside it."""
