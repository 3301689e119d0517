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

# The sample: a command in a fresh sandbox on the host image.
demo: all
	./$(BUILD)/kiln sandbox run --image host --memory 512M --pids 256 -- \
		sh -c 'echo "hello from $$(hostname), pid $$$$, uid $$(id -u)"; ls /root 2>&1 | head -1'

check: deps
	./tests/run-all

check-fast: all
	./tests/run --build $(BUILD)

bench: all
	./bench/run-all $(BUILD)

format:
	clang-format -i $$(git ls-files '*.c' '*.h')

clean:
	rm -rf $(BUILD) $(ASAN_BUILD)
