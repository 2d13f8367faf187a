# src/engine/redis/redis.cmake — the redis:// and redlock:// engines (hiredis), included by
# the top-level CMakeLists after the library targets exist. holds.lua is embedded into a
# generated C file at configure time (re-run automatically when the .lua changes).
option(HF_WITH_REDIS "build the redis:// and redlock:// engines (needs hiredis)" ON)
if(HF_WITH_REDIS)
  pkg_check_modules(HIREDIS REQUIRED IMPORTED_TARGET hiredis)
  set(HF_REDIS_DIR ${PROJECT_SOURCE_DIR}/src/engine/redis)
  set(HF_REDIS_SCRIPT_C ${PROJECT_BINARY_DIR}/generated/hf_redis_script.c)
  set_property(DIRECTORY ${PROJECT_SOURCE_DIR} APPEND PROPERTY CMAKE_CONFIGURE_DEPENDS
               ${HF_REDIS_DIR}/holds.lua)
  # Two forms of the one text: a script (EVAL/EVALSHA, any Redis) that ends by calling
  # run(ARGV), and a Redis 7 function library (FUNCTION LOAD, FCALL) whose closures are built
  # once per load instead of once per call. Both are named by the text's SHA-1, so processes
  # of different versions sharing one Redis never call each other's code.
  file(READ ${HF_REDIS_DIR}/holds.lua HF_REDIS_LUA)
  string(SHA1 HF_REDIS_LUA_SHA1 "${HF_REDIS_LUA}")
  string(SUBSTRING "${HF_REDIS_LUA_SHA1}" 0 16 HF_REDIS_LUA_ID)
  set(HF_REDIS_FUNCTION "holdfast_${HF_REDIS_LUA_ID}")
  set(HF_REDIS_SCRIPT_TEXT "${HF_REDIS_LUA}\nreturn run(ARGV)\n")
  set(HF_REDIS_LIBRARY_TEXT "#!lua name=${HF_REDIS_FUNCTION}\n${HF_REDIS_LUA}\nredis.register_function('${HF_REDIS_FUNCTION}', function(_, args) return run(args) end)\n")
  foreach(form SCRIPT LIBRARY)
    string(HEX "${HF_REDIS_${form}_TEXT}" hex)
    string(LENGTH "${hex}" hexlen)
    math(EXPR HF_REDIS_${form}_LEN "${hexlen} / 2")
    string(REGEX REPLACE "([0-9a-f][0-9a-f])" "0x\\1," HF_REDIS_${form}_BYTES "${hex}")
  endforeach()
  file(WRITE ${HF_REDIS_SCRIPT_C}.tmp
    "/* generated from src/engine/redis/holds.lua by redis.cmake: do not edit */\n"
    "#include <stddef.h>\n"
    "extern const char hf__redis_script[];\n"
    "extern const size_t hf__redis_script_len;\n"
    "extern const char hf__redis_library[];\n"
    "extern const size_t hf__redis_library_len;\n"
    "extern const char hf__redis_function[];\n"
    "const char hf__redis_script[] = {${HF_REDIS_SCRIPT_BYTES} 0};\n"
    "const size_t hf__redis_script_len = ${HF_REDIS_SCRIPT_LEN};\n"
    "const char hf__redis_library[] = {${HF_REDIS_LIBRARY_BYTES} 0};\n"
    "const size_t hf__redis_library_len = ${HF_REDIS_LIBRARY_LEN};\n"
    "const char hf__redis_function[] = \"${HF_REDIS_FUNCTION}\";\n")
  file(COPY_FILE ${HF_REDIS_SCRIPT_C}.tmp ${HF_REDIS_SCRIPT_C} ONLY_IF_DIFFERENT)
  target_sources(holdfast_obj PRIVATE
    ${HF_REDIS_DIR}/common.c
    ${HF_REDIS_DIR}/engine.c
    ${HF_REDIS_DIR}/retention.c
    ${HF_REDIS_DIR}/redlock.c
    ${HF_REDIS_SCRIPT_C})
  target_compile_definitions(holdfast_obj PRIVATE HF_WITH_REDIS)
  list(APPEND HF_PC_ENGINES hiredis) # holdfast.pc's Requires.private
  foreach(t holdfast_obj holdfast_static holdfast_shared)
    target_link_libraries(${t} PUBLIC PkgConfig::HIREDIS)
  endforeach()
endif()
