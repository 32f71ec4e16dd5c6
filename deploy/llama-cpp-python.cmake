# Included by llama.cpp's CMake project (CMAKE_PROJECT_llama.cpp_INCLUDE, see the
# Makefile's LLAMA_CMAKE_ARGS and deploy/Dockerfile). llama-cpp-python turns on
# llama.cpp's "common" library, which its Python binding never loads (it opens
# libllama and libggml only): 35 of the build's 238 C++ files, among the slowest
# to compile (argument parsing, chat templates, an HTTP client). Off, with
# LLAVA_BUILD=OFF, a cold build of llama-cpp-python 0.3.35 takes 5.8 CPU-minutes
# instead of 11.6; the binding, its grammars and its OpenAI server work the same.
set(LLAMA_BUILD_COMMON OFF CACHE BOOL "llama.cpp common library: unused by llama-cpp-python" FORCE)
