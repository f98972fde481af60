// A shared library that is not a groklab plugin: no entry symbol.
extern "C" int some_other_function(void) { return 42; }
