// Registration functions of the built-in task components.
#pragma once

#include "groklab/registry.h"

namespace groklab::tasks {

void register_modular_arithmetic(Registrar& r);
void register_mccoy(Registrar& r);  // question_formation, tense_inflection
void register_dyck(Registrar& r);
void register_random_tokens(Registrar& r);  // groklab bench's workload

}  // namespace groklab::tasks
