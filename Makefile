# upcase: build, demo, test, lint, install.
#   make          the C library (build/lib/: libupcase.so.X.Y.Z and its symlinks, libupcase.a) and the C examples
#                 (build/c/); needs cargo and a C compiler, nothing from a Python package index
#   make demo     run a TCP and a UDP server with their clients on loopback
#   make python   the Python module, built by maturin into .venv (made here, with maturin, pytest, mypy from PyPI)
#   make wheel    a manylinux_2_28 abi3 wheel in build/wheels/ (maturin with zig); make sdist: the source archive
#   make test     every test: Rust (debug and release), C (shared, static, ASan/UBSan, valgrind), end-to-end, Python
#   make lint     cargo fmt --check, clippy -D warnings, header drift check
#   make install PREFIX=/usr/local   library, header, pkg-config file
#   make bench    upcase against the reference servers, then the TLS section (not in CI; about 13 minutes once built)
#   make bench-tls    the TLS section alone: upcase's TLS server against tokio-rustls, C + OpenSSL, Python ssl,
#                     socat and ncat, and the crypto floor from openssl speed (about 4 minutes)
#   make experiments  the measurements behind BENCHMARKS.md's notes: build/bench/syscall_cost, build/bench/udp_floor,
#                     build/bench/uring_server
#   make soak     mixed TCP/UDP load, every byte checked, fds and RSS must return (not in CI; 5 minutes)
#   make miri     the pure parts (transform, byte order, addresses, UDP control messages) under Miri (nightly)
#   make fuzz-smoke   every cargo-fuzz target for SMOKE_SECONDS (25 s) each, as CI does (nightly)
#   make fuzz         every cargo-fuzz target for FUZZ_SECONDS (300 s) each; make fuzz-merge: keep what it found

CARGO   ?= cargo
CC      ?= cc
PYTHON  ?= python3
PREFIX  ?= /usr/local
CFLAGS  ?= -O2 -g
WARN    := -std=c11 -D_POSIX_C_SOURCE=200809L -Wall -Wextra -Wpedantic -Werror
BUILD   := build/c
VERSION := $(shell sed -n 's/^version = "\(.*\)"/\1/p' Cargo.toml | head -n 1)
# The ABI version, the number in the SONAME: raised when a release breaks C
# programs built against the one before.
SOVERSION := 0
SONAME  := libupcase.so.$(SOVERSION)
# The C library laid out as installed: libupcase.so -> libupcase.so.0 ->
# libupcase.so.X.Y.Z, libupcase.a, upcase.h.
LIBDIR  := $(abspath build/lib)
# What a C program linking libupcase.a also needs: `cargo rustc -- --print
# native-static-libs` less its -lgcc_s, since the C compiler adds the
# unwinder itself (libgcc_s linking dynamically, libgcc_eh with -static).
STATIC_LIBS := -lutil -lrt -lpthread -lm -ldl -lc
VENV    := .venv
PYTEST  := $(VENV)/bin/pytest

EXAMPLES := tcp_server tcp_client udp_server udp_client
EXAMPLE_BINS := $(addprefix $(BUILD)/,$(EXAMPLES))
CTESTS := $(BUILD)/test_capi_shared $(BUILD)/test_capi_static $(BUILD)/test_capi_asan $(BUILD)/test_capi_io_uring
# The library with the io_uring loop (cargo feature io-uring), built apart
# so that the default library never carries it.
URING_TARGET := target/io-uring
URING_LIBDIR := $(abspath build/lib-io-uring)

.PHONY: lib-io-uring bench bench-tls bench-tls-servers experiments soak miri fuzz fuzz-smoke fuzz-build fuzz-merge all lib examples python wheel sdist \
	demo test test-rust test-c test-e2e test-python lint install clean FORCE

all: lib examples

# $(call c_library,CARGO_TARGET_DIR,FEATURES,DIR): the crate is an rlib; this
# builds it as libupcase.so (with its SONAME) and libupcase.a, and lays them
# out in DIR with the header build.rs wrote into its OUT_DIR, found in cargo's
# JSON messages (DIR/cargo.json). A file is replaced only when it changed, so
# that what links against it is rebuilt only then.
replace = cmp -s $(1) $(2) || cp --remove-destination $(1) $(2)
c_library = mkdir -p $(3) && \
	CARGO_TARGET_DIR=$(1) $(CARGO) rustc --release --locked --lib --features "capi $(2)" \
		--crate-type cdylib,staticlib --message-format=json-render-diagnostics \
		-- -C link-arg=-Wl,-soname,$(SONAME) > $(3)/cargo.json && \
	out=$$(sed -n 's|.*"out_dir":"\([^"]*/build/upcase-[0-9a-f]*/out\)".*|\1|p' $(3)/cargo.json) && \
	test -f "$$out/upcase.h" && \
	$(call replace,"$$out/upcase.h",$(3)/upcase.h) && \
	$(call replace,$(1)/release/libupcase.so,$(3)/libupcase.so.$(VERSION)) && \
	$(call replace,$(1)/release/libupcase.a,$(3)/libupcase.a) && \
	ln -sfn libupcase.so.$(VERSION) $(3)/$(SONAME) && \
	ln -sfn $(SONAME) $(3)/libupcase.so

# The release C library, its header copied into include/ (committed; `make
# lint` checks it is current), and the Rust examples; cargo decides whether
# anything changed.
lib: FORCE
	$(call c_library,target,,$(LIBDIR))
	$(call replace,$(LIBDIR)/upcase.h,include/upcase.h)
	$(CARGO) build --release --locked --lib --examples

$(LIBDIR)/libupcase.so $(LIBDIR)/libupcase.a: lib

examples: $(EXAMPLE_BINS)

$(BUILD):
	mkdir -p $@

$(BUILD)/%: examples/c/%.c examples/c/cli.h include/upcase.h $(LIBDIR)/libupcase.so | $(BUILD)
	$(CC) $(WARN) $(CFLAGS) -Iinclude $< -o $@ -L$(LIBDIR) -lupcase -Wl,-rpath,$(LIBDIR)

demo: all
	bash tests/e2e/demo.sh

# C test program, linked three ways.
$(BUILD)/test_capi_shared: tests/c/test_capi.c include/upcase.h $(LIBDIR)/libupcase.so | $(BUILD)
	$(CC) $(WARN) $(CFLAGS) -Iinclude $< -o $@ -L$(LIBDIR) -lupcase -Wl,-rpath,$(LIBDIR) -lpthread

$(BUILD)/test_capi_static: tests/c/test_capi.c include/upcase.h $(LIBDIR)/libupcase.a | $(BUILD)
	$(CC) $(WARN) $(CFLAGS) -Iinclude $< -o $@ $(LIBDIR)/libupcase.a $(STATIC_LIBS)

lib-io-uring: FORCE
	$(call c_library,$(URING_TARGET),io-uring,$(URING_LIBDIR))

$(URING_LIBDIR)/libupcase.a: lib-io-uring

$(BUILD)/test_capi_io_uring: tests/c/test_capi.c include/upcase.h $(URING_LIBDIR)/libupcase.a | $(BUILD)
	$(CC) $(WARN) $(CFLAGS) -Iinclude $< -o $@ $(URING_LIBDIR)/libupcase.a $(STATIC_LIBS)

$(BUILD)/test_capi_asan: tests/c/test_capi.c include/upcase.h $(LIBDIR)/libupcase.a | $(BUILD)
	$(CC) $(WARN) -O1 -g -fsanitize=address,undefined -fno-omit-frame-pointer -fno-sanitize-recover=all \
		-Iinclude $< -o $@ $(LIBDIR)/libupcase.a $(STATIC_LIBS)

$(VENV)/bin/python:
	$(PYTHON) -m venv $(VENV)

# The Python packages the build and the tests use, installed into .venv.
PYDEPS := $(VENV)/.deps-2
$(PYDEPS): | $(VENV)/bin/python
	$(VENV)/bin/pip install --quiet --disable-pip-version-check pytest pytest-timeout mypy "maturin>=1.9,<2"
	touch $@

# What `make wheel` and its tests add: zig, the linker that targets an older
# glibc, and auditwheel, which reads the tag a wheel's symbols allow.
WHEELDEPS := $(VENV)/.wheel-deps-1
$(WHEELDEPS): | $(PYDEPS)
	$(VENV)/bin/pip install --quiet --disable-pip-version-check "ziglang>=0.13,<0.18" "auditwheel>=6,<7"
	touch $@

# The Python module, built by maturin and installed into .venv (so that
# `.venv/bin/python -c "import upcase"` works after `make python`).
python: $(PYDEPS)
	VIRTUAL_ENV=$(abspath $(VENV)) PATH=$(abspath $(VENV))/bin:$$PATH \
		$(VENV)/bin/maturin develop --release --locked -q -m bindings/python/Cargo.toml

# The wheel a user can install anywhere with glibc 2.28 or later: zig links
# against that glibc's symbols (pyproject.toml strips the module), and
# maturin refuses a wheel that would need a newer one.
WHEELS := build/wheels
wheel: $(WHEELDEPS)
	rm -f $(WHEELS)/upcase-*.whl
	PATH=$(abspath $(VENV))/bin:$$PATH $(VENV)/bin/maturin build --profile wheel --locked -q \
		--zig --compatibility manylinux_2_28 -m bindings/python/Cargo.toml -o $(WHEELS)

sdist: $(PYDEPS)
	rm -f $(WHEELS)/upcase-*.tar.gz
	$(VENV)/bin/maturin sdist -m bindings/python/Cargo.toml -o $(WHEELS)

test: test-rust test-c test-e2e test-python

# The TCP integration tests run twice: on epoll, then on io_uring (built
# with the io-uring feature, in a target directory of its own).
test-rust: all $(BUILD)-io-uring/tcp_server
	$(CARGO) test --locked
	$(CARGO) test --locked --no-default-features --lib --test tcp
	$(CARGO) test --locked --release
	UPCASE_TEST_IO_URING=1 CARGO_TARGET_DIR=$(URING_TARGET) $(CARGO) test --locked --release --features io-uring \
		--lib --test tcp --test faults --test leaks
	$(CARGO) test --locked -p upcase-loadgen

test-c: all $(CTESTS)
	$(BUILD)/test_capi_shared
	$(BUILD)/test_capi_static
	UPCASE_TEST_IO_URING=1 $(BUILD)/test_capi_io_uring
	ASAN_OPTIONS=detect_leaks=1 UBSAN_OPTIONS=print_stacktrace=1 $(BUILD)/test_capi_asan
	valgrind --quiet --error-exitcode=1 --leak-check=full --errors-for-leak-kinds=definite \
		--show-leak-kinds=definite --suppressions=tests/c/valgrind.supp $(BUILD)/test_capi_shared

test-e2e: all python
	$(PYTEST) -q tests/e2e

test-python: all python wheel sdist
	$(PYTEST) -q bindings/python/tests

lint:
	$(CARGO) fmt --all -- --check
	$(CARGO) clippy --locked --workspace --all-targets -- -D warnings
	$(CARGO) clippy --locked --all-targets --features io-uring -- -D warnings
	$(CARGO) clippy --locked --all-targets --no-default-features -- -D warnings
	$(MAKE) lib
	git diff --exit-code -- include/upcase.h || { echo "include/upcase.h is stale: commit the regenerated header"; exit 1; }

install: lib
	install -d $(DESTDIR)$(PREFIX)/lib $(DESTDIR)$(PREFIX)/include $(DESTDIR)$(PREFIX)/lib/pkgconfig
	install -m 0755 $(LIBDIR)/libupcase.so.$(VERSION) $(DESTDIR)$(PREFIX)/lib/libupcase.so.$(VERSION)
	ln -sfn libupcase.so.$(VERSION) $(DESTDIR)$(PREFIX)/lib/$(SONAME)
	ln -sfn $(SONAME) $(DESTDIR)$(PREFIX)/lib/libupcase.so
	install -m 0644 $(LIBDIR)/libupcase.a $(DESTDIR)$(PREFIX)/lib/libupcase.a
	install -m 0644 include/upcase.h $(DESTDIR)$(PREFIX)/include/upcase.h
	sed -e 's|@PREFIX@|$(PREFIX)|g' -e 's|@VERSION@|$(VERSION)|g' -e 's|@STATIC_LIBS@|$(STATIC_LIBS)|g' \
		upcase.pc.in > $(DESTDIR)$(PREFIX)/lib/pkgconfig/upcase.pc

# The C server on the library with the io_uring loop, for the benchmark's
# io_uring column.
$(BUILD)-io-uring/tcp_server: examples/c/tcp_server.c examples/c/cli.h include/upcase.h lib-io-uring
	mkdir -p $(BUILD)-io-uring
	$(CC) $(WARN) $(CFLAGS) -Iinclude $< -o $@ -L$(URING_LIBDIR) -lupcase -Wl,-rpath,$(URING_LIBDIR)

# The TLS analogue of bench/servers/epoll_server.c, on OpenSSL (Debian: libssl-dev).
build/bench/c-tls/tls_server: bench/servers/c-tls/tls_server.c
	mkdir -p $(@D)
	$(CC) -O2 -Wall -Wextra -Werror -o $@ $< -lssl -lcrypto

# The benchmark: the transform's own, then every server in every mode.
bench: all python $(BUILD)-io-uring/tcp_server bench-tls-servers
	$(CARGO) build --release --locked -p upcase-loadgen -p tokio-server
	mkdir -p build/bench
	$(CC) -O2 -Wall -Wextra -Werror -o build/bench/epoll_server bench/servers/epoll_server.c
	command -v iperf3 >/dev/null || { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq iperf3; }
	$(VENV)/bin/pip install --quiet --disable-pip-version-check matplotlib
	$(CARGO) bench --locked --bench upper | tee bench/results/upper.txt
	$(VENV)/bin/python bench/run.py --tls $(BENCH_ARGS)

# The TLS section's servers: upcase's (the C example when it takes
# --tls-cert, else the Rust bench server), tokio-rustls, and the load generator.
bench-tls-servers: all build/bench/c-tls/tls_server
	$(CARGO) build --release --locked -p upcase-loadgen -p tokio-server
	$(CARGO) build --release --locked -p upcase-loadgen --example upcase-tls-server

bench-tls: bench-tls-servers python
	$(VENV)/bin/python bench/run.py --tls-only $(BENCH_ARGS)

# Experiments, not part of make bench (see bench/experiments/): the io_uring
# server needs liburing's header (Debian: liburing-dev, installed if missing).
experiments:
	mkdir -p build/bench
	$(CC) -O2 -Wall -Wextra -Werror -o build/bench/syscall_cost bench/experiments/syscall_cost.c
	$(CC) -O2 -Wall -Wextra -Werror -o build/bench/udp_floor bench/experiments/udp_floor.c
	test -e /usr/include/liburing.h || { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq liburing-dev; }
	$(CC) -O2 -Wall -Wextra -Werror -o build/bench/uring_server bench/experiments/uring_server.c -luring

soak: all python
	$(VENV)/bin/python bench/soak.py $(SOAK_ARGS)

# Miri and cargo-fuzz need the nightly toolchain (.ci/run installs what is
# missing). Miri runs the unit tests of the code that needs no system call
# beyond memory; tests that call the resolver are #[cfg_attr(miri, ignore)].
NIGHTLY       ?= +nightly
MIRIFLAGS     ?= -Zmiri-strict-provenance
MIRI_TESTS    := upper:: endian:: addr:: error:: ffi::api:: sys::mmsg::tests::
FUZZ_SECONDS  ?= 300
SMOKE_SECONDS ?= 25
# Any single input taking longer than this is a hang, reported as a crash.
FUZZ_ARGS     ?= -timeout=30
# Every target of fuzz/Cargo.toml; new inputs go to fuzz/corpus/<target>
# (not tracked), the committed seeds are read from fuzz/seeds/<target>.
FUZZ_EACH = set -e; targets=$$($(CARGO) $(NIGHTLY) fuzz list); test -n "$$targets"; \
	for t in $$targets; do mkdir -p fuzz/corpus/$$t fuzz/seeds/$$t;

miri:
	MIRIFLAGS="$(MIRIFLAGS)" $(CARGO) $(NIGHTLY) miri test --locked --lib -- $(MIRI_TESTS)

# cargo-fuzz has no --locked: check first that fuzz/Cargo.lock is current.
fuzz-build:
	$(CARGO) $(NIGHTLY) fetch --locked --manifest-path fuzz/Cargo.toml
	$(CARGO) $(NIGHTLY) fuzz build

fuzz-smoke: fuzz-build
	$(FUZZ_EACH) echo "== fuzz $$t: $(SMOKE_SECONDS) s"; \
		$(CARGO) $(NIGHTLY) fuzz run $$t fuzz/corpus/$$t fuzz/seeds/$$t -- \
			-max_total_time=$(SMOKE_SECONDS) -print_final_stats=1 $(FUZZ_ARGS); done

fuzz: fuzz-build
	$(FUZZ_EACH) echo "== fuzz $$t: $(FUZZ_SECONDS) s"; \
		$(CARGO) $(NIGHTLY) fuzz run $$t fuzz/corpus/$$t fuzz/seeds/$$t -- \
			-max_total_time=$(FUZZ_SECONDS) -print_final_stats=1 $(FUZZ_ARGS); done

# Adds to fuzz/seeds/<target> the inputs of fuzz/corpus/<target> that reach
# code (edges, not hit counts: few files) the seeds do not; commit them.
fuzz-merge: fuzz-build
	$(FUZZ_EACH) $(CARGO) $(NIGHTLY) fuzz run $$t fuzz/seeds/$$t fuzz/corpus/$$t -- \
		-merge=1 -use_counters=0 $(FUZZ_ARGS); done

clean:
	$(CARGO) clean
	rm -rf build fuzz/target

FORCE:
