# Thin wrapper over meson and scripts/deps.sh: `make demo` and `make test` are
# all a fresh Debian 12 machine needs.
BUILD ?= build
ASAN ?= build-asan

.PHONY: all build demo test bench deps clean format format-check reference

all: build

deps:
	@scripts/deps.sh all

$(BUILD)/build.ninja:
	meson setup $(BUILD) --buildtype=release

build: $(BUILD)/build.ninja
	ninja -C $(BUILD)

demo:
	@scripts/deps.sh demo
	@$(MAKE) --no-print-directory build
	@scripts/demo.sh $(BUILD)/lb/tern

test:
	@scripts/deps.sh test
	@tests/run.sh

bench:
	@scripts/deps.sh all
	@$(MAKE) --no-print-directory build
	@bench/run.sh $(BUILD)/lb/tern

reference: build
	$(BUILD)/lb/tern --reference > conf/REFERENCE.md

format:
	clang-format -i $$(git ls-files '*.c' '*.h')

format-check:
	clang-format --dry-run -Werror $$(git ls-files '*.c' '*.h')

clean:
	rm -rf $(BUILD) $(ASAN) build-fuzz
