// Symbol visibility for the groklab shared library and its plugins.
#pragma once

// Marks a symbol of libgroklab (or a plugin's entry point) as exported; every
// other symbol is hidden (targets build with -fvisibility=hidden).
#if defined(_WIN32)
#define GROKLAB_API __declspec(dllexport)
#else
#define GROKLAB_API __attribute__((visibility("default")))
#endif
