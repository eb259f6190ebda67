# mproc - convenience targets over CMake (GNU make).  `make help` lists them.
#
# Each target first runs scripts/deps.sh, which installs what is missing
# (cmake, make, gcc, python3, sanitizer runtimes, clang-format; scdoc for the
# man pages) with apt-get when run as root.

SHELL := /bin/bash
.DEFAULT_GOAL := build

BUILD_DIR ?= build
# `make test-shared`: the suite linked to libmproc.so instead of libmproc.a.
SHARED_DIR ?= build-shared
ASAN_DIR ?= build-asan
TSAN_DIR ?= build-tsan
FUZZ_DIR ?= build-fuzz
# Seconds each fuzz target runs in `make fuzz`.
FUZZ_SECONDS ?= 60
BUILD_TYPE ?= RelWithDebInfo
JOBS ?= 2
PREFIX ?= /usr/local
CMAKE ?= cmake
CTEST ?= ctest
# Extra arguments for every cmake configure, e.g. CMAKE_ARGS=-DMPROC_WERROR=OFF
CMAKE_ARGS ?=
# Extra arguments for every ctest run, e.g. CTEST_ARGS='-R test_pool'
CTEST_ARGS ?=

DEPS := bash scripts/deps.sh
CTEST_RUN = $(CTEST) --output-on-failure --no-tests=error $(CTEST_ARGS)
FORMAT_DIRS := include src tests bench examples

# Sanitizer builds: -O1 (fast enough, exact stacks), and warnings are not
# errors there because gcc's instrumentation adds false positives
# (-Wmaybe-uninitialized and friends); `make test` keeps -Werror.
SAN_CMAKE_ARGS = -DCMAKE_BUILD_TYPE=Debug '-DCMAKE_C_FLAGS_DEBUG=-g -O1' \
                 -DMPROC_WERROR=OFF

.PHONY: all build test demo asan tsan fuzz bench format install deb clean deps help
.PHONY: test-shared check-install

all: build

help:
	@echo 'make / make build   configure $(BUILD_DIR)/ ($(BUILD_TYPE)) and build with -j$(JOBS)'
	@echo 'make test           build, then run the test suite (ctest)'
	@echo 'make test-shared    the test suite linked to libmproc.so, in $(SHARED_DIR)/'
	@echo 'make check-install  build; exported symbols == declared functions; install'
	@echo '                    into a temp prefix and build/run programs against it'
	@echo '                    (find_package and pkg-config, shared and static);'
	@echo '                    options structs grown in a scratch "1.1" (ABI check)'
	@echo 'make demo           build, then run ./$(BUILD_DIR)/hash_files'
	@echo 'make asan           tests under AddressSanitizer + UBSan in $(ASAN_DIR)/'
	@echo 'make tsan           tests under ThreadSanitizer in $(TSAN_DIR)/'
	@echo 'make fuzz           libFuzzer targets (clang) in $(FUZZ_DIR)/, each run $(FUZZ_SECONDS) s'
	@echo 'make bench          build, then run bench/run.sh'
	@echo 'make format         clang-format -i over $(FORMAT_DIRS)'
	@echo 'make install        install libmproc.so and .a, the headers, mproc.pc and the'
	@echo '                    CMake package into PREFIX (now $(PREFIX)); DESTDIR is honoured'
	@echo 'make deb            Debian packages (libmproc1, libmproc-dev) in build-deb/, lintian-checked'
	@echo 'make clean          remove the build trees'

deps:
	@$(DEPS) man

build: deps
	$(CMAKE) -S . -B $(BUILD_DIR) -DCMAKE_BUILD_TYPE=$(BUILD_TYPE) $(CMAKE_ARGS)
	$(CMAKE) --build $(BUILD_DIR) -j $(JOBS)

test: build
	$(CTEST_RUN) --test-dir $(BUILD_DIR)

demo: build
	./$(BUILD_DIR)/hash_files

# Both libraries are always built; tests, examples and benchmarks link the
# static one unless MPROC_TEST_SHARED is on.
test-shared: deps
	$(CMAKE) -S . -B $(SHARED_DIR) -DCMAKE_BUILD_TYPE=$(BUILD_TYPE) \
	    -DMPROC_TEST_SHARED=ON $(CMAKE_ARGS)
	$(CMAKE) --build $(SHARED_DIR) -j $(JOBS)
	$(CTEST_RUN) --test-dir $(SHARED_DIR)

check-install: build
	@$(DEPS) pkgconfig
	bash scripts/check_symbols.sh $(BUILD_DIR)
	bash scripts/check_consumers.sh $(BUILD_DIR)
	bash scripts/check_abi_growth.sh

# deps.sh --san-wrapper installs the sanitizer runtime, checks that a
# sanitized program runs here, and prints the prefix the tests need (empty,
# or `setarch ... -R` where the runtime cannot cope with the kernel's ASLR).
asan:
	@mkdir -p $(ASAN_DIR)
	@$(DEPS) --san-wrapper address > $(ASAN_DIR)/.san-wrapper
	$(CMAKE) -S . -B $(ASAN_DIR) -DMPROC_SANITIZE=address $(SAN_CMAKE_ARGS) $(CMAKE_ARGS)
	$(CMAKE) --build $(ASAN_DIR) -j $(JOBS)
	$$(cat $(ASAN_DIR)/.san-wrapper) $(CTEST_RUN) --test-dir $(ASAN_DIR)

tsan:
	@mkdir -p $(TSAN_DIR)
	@$(DEPS) --san-wrapper thread > $(TSAN_DIR)/.san-wrapper
	$(CMAKE) -S . -B $(TSAN_DIR) -DMPROC_SANITIZE=thread $(SAN_CMAKE_ARGS) $(CMAKE_ARGS)
	$(CMAKE) --build $(TSAN_DIR) -j $(JOBS)
	$$(cat $(TSAN_DIR)/.san-wrapper) $(CTEST_RUN) --test-dir $(TSAN_DIR)

# Each fuzz target runs from a scratch corpus in $(FUZZ_DIR)/corpus/<name>
# seeded by fuzz/corpus/<name>/; a crash leaves its input in $(FUZZ_DIR)/.
fuzz:
	@$(DEPS) fuzz
	CC=clang $(CMAKE) -S . -B $(FUZZ_DIR) -DCMAKE_BUILD_TYPE=Debug \
	    '-DCMAKE_C_FLAGS_DEBUG=-g -O1' -DMPROC_WERROR=OFF -DMPROC_FUZZ=ON \
	    -DMPROC_BUILD_TESTS=OFF -DMPROC_BUILD_EXAMPLES=OFF \
	    -DMPROC_BUILD_BENCH=OFF $(CMAKE_ARGS)
	$(CMAKE) --build $(FUZZ_DIR) -j $(JOBS)
	@set -e; n=0; for src in fuzz/fuzz_*.c; do \
	    [ -e "$$src" ] || continue; \
	    name=$$(basename "$$src" .c); n=$$((n + 1)); \
	    mkdir -p $(FUZZ_DIR)/corpus/$$name; \
	    seeds=; [ -d fuzz/corpus/$$name ] && seeds=fuzz/corpus/$$name; \
	    echo "fuzz: $$name for $(FUZZ_SECONDS) s"; \
	    ( cd $(FUZZ_DIR) && ASAN_OPTIONS=detect_leaks=1:abort_on_error=1 \
	      ./$$name -max_total_time=$(FUZZ_SECONDS) -timeout=10 \
	        -rss_limit_mb=2048 -print_final_stats=1 \
	        corpus/$$name $${seeds:+../$$seeds} ); \
	done; echo "fuzz: $$n target(s) ran clean"

bench: build
	bash bench/run.sh

format:
	@$(DEPS) format
	@cf=$$(command -v clang-format-14 || command -v clang-format) && \
	find $(wildcard $(FORMAT_DIRS)) -type f \( -name '*.c' -o -name '*.h' \) \
	    ! -path examples/first.c -print0 | xargs -0 -r "$$cf" -i
# examples/first.c is the README's first example, kept to 20 lines by hand.

install: build
	$(if $(DESTDIR),DESTDIR='$(DESTDIR)') $(CMAKE) --install $(BUILD_DIR) --prefix '$(PREFIX)'

# Builds from a copy of the sources in a temporary directory; only the .debs
# (and build.log) land in build-deb/.  scripts/check_deb.sh then tests them.
deb:
	bash scripts/deb.sh

clean:
	rm -rf $(BUILD_DIR) $(SHARED_DIR) $(ASAN_DIR) $(TSAN_DIR) $(FUZZ_DIR)
