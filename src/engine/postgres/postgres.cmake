# src/engine/postgres/postgres.cmake — the PostgreSQL engine (postgres://), included by the
# top-level CMakeLists once the library targets exist. Its tests: tests/pg.
option(HF_WITH_POSTGRES "build the postgres:// engine (needs libpq)" ON)
if(HF_WITH_POSTGRES)
  pkg_check_modules(LIBPQ REQUIRED IMPORTED_TARGET libpq)
  target_sources(holdfast_obj PRIVATE
    ${PROJECT_SOURCE_DIR}/src/engine/postgres/schema.c
    ${PROJECT_SOURCE_DIR}/src/engine/postgres/ops.c
    ${PROJECT_SOURCE_DIR}/src/engine/postgres/calls.c
    ${PROJECT_SOURCE_DIR}/src/engine/postgres/engine.c
    ${PROJECT_SOURCE_DIR}/src/engine/postgres/sagas.c
    ${PROJECT_SOURCE_DIR}/src/engine/postgres/retention.c)
  target_compile_definitions(holdfast_obj PRIVATE HF_WITH_POSTGRES)
  list(APPEND HF_PC_ENGINES libpq) # holdfast.pc's Requires.private
  foreach(t holdfast_obj holdfast_static holdfast_shared)
    target_link_libraries(${t} PUBLIC PkgConfig::LIBPQ)
  endforeach()
endif()
