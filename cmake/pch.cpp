// Compiles the shared precompiled header (LibTorch) once for all targets that reuse it.
