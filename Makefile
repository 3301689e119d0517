# A thin wrapper around Meson. `make` builds, `make check` runs everything CI
# runs (warnings as errors, the test suite, then again under ASan+UBSan).
BUILD ?= build
ASAN_BUILD ?= build-asan
MESON_FLAGS ?=

.PHONY: all deps check check-fast demo bench format clean

all: $(BUILD)/build.ninja
	ninja -C $(BUILD)

$(BUILD)/build.ninja:
	./tools/install-deps
	meson setup $(BUILD) $(MESON_FLAGS)

$(ASAN_BUILD)/build.ninja:
	meson setup $(ASAN_BUILD) -Db_sanitize=address,undefined -Db_lundef=false -Dwerror=true

deps:
	./tools/install-deps --test

# The sample: examples/c-project built and tested by `kiln run` on the
# embedded default (a private server and worker it starts itself).
demo: all
	cd examples/c-project && ../../$(BUILD)/kiln run

check: deps
	./tests/run-all

check-fast: all
	./tests/run --build $(BUILD)

bench: all
	./tools/install-deps --bench
	./bench/run-all $(BUILD)

format:
	clang-format -i $$(git ls-files '*.c' '*.h')

clean:
	rm -rf $(BUILD) $(ASAN_BUILD)
