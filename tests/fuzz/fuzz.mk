# Fuzzing (tests/fuzz/README.md). Included at the end of the top Makefile,
# so that the object lists are complete.
#   make check                        replays every corpus (any compiler, no libFuzzer)
#   make fuzz [FUZZ_TIME=600]         each target under libFuzzer with ASan+UBSan, seconds per target
#   make fuzz FUZZ_TARGETS="sse gguf" some of them
#   make fuzz-merge                   minimize what `make fuzz` found into tests/fuzz/corpus/
#   make fuzz-build                   only build the libFuzzer binaries ($(BUILD)/fuzz/)

FUZZ_ALL := gguf tokenizer worker-request hive-request sse model-ref hf-listing worker-reply keeper-json
FUZZ_TARGETS ?= $(FUZZ_ALL)
FUZZ_TIME ?= 600
FUZZ_CC ?= clang
FUZZ_ARGS ?=
FUZZ_SAN := address,undefined

# ---- replay: part of `make check` ---------------------------------------------
FUZZ_REPLAYS := $(patsubst %,$(BUILD)/tests/fuzz-%,$(FUZZ_ALL))
FUZZ_VOCABS := $(BUILD)/tests/fuzz/vocab-spm.gguf $(BUILD)/tests/fuzz/vocab-bpe.gguf
FUZZ_CPPFLAGS := -I. -Itests/fuzz -DRBEE_BUILDDIR='"$(abspath $(BUILD))"'
TESTS += $(FUZZ_REPLAYS)
check: $(FUZZ_REPLAYS)

$(BUILD)/obj/tests/fuzz/%.o: override CPPFLAGS += $(FUZZ_CPPFLAGS)

$(BUILD)/tests/fuzz-%: $(BUILD)/obj/tests/fuzz/fuzz-%.o $(BUILD)/obj/tests/fuzz/replay.o \
                       $(WORKER_OBJ) $(HIVE_OBJ) $(KEEPER_OBJ) $(LIBCOMMON) $(LIBENGINE)
	@mkdir -p $(dir $@)
	$(if $(V),,@echo "  LD      $@";)$(CC) $(LDFLAGS) -o $@ $(filter %.o %.a,$^) $(LDLIBS)

# The tokenizer target always has two vocabularies, whatever shared data there is.
$(BUILD)/tests/fuzz-tokenizer: $(FUZZ_VOCABS)
$(BUILD)/tests/fuzz/vocab-spm.gguf: $(BUILD)/rbee-mkmodel
	@mkdir -p $(dir $@)
	$(Q)$< -q -o $@ -s tiny -t F32 --pure --layers 1 --dim 16 --ffn 32 --heads 2 --kv-heads 1 --ctx 64
$(BUILD)/tests/fuzz/vocab-bpe.gguf: $(BUILD)/rbee-mkmodel
	@mkdir -p $(dir $@)
	$(Q)$< -q -o $@ -s tiny-qwen2 -t F32 --pure --layers 1 --dim 16 --ffn 32 --heads 2 --kv-heads 1 --ctx 64

# ---- libFuzzer builds: `make fuzz` --------------------------------------------
# Everything is compiled again with clang, coverage and sanitizers, in its own tree.
FUZZ_DIR := $(BUILD)/fuzz
# The C sources of the libraries, always without CUDA (the stubs stand in):
# the parsers are what is fuzzed.
FUZZ_SRC := $(filter-out engine/cuda/%,$(wildcard $(patsubst $(BUILD)/obj/%.o,%.c,$(ENGINE_OBJ) $(COMMON_OBJ) \
              $(WORKER_OBJ) $(HIVE_OBJ) $(KEEPER_OBJ)))) $(wildcard engine/cuda/none.c)
FUZZ_LIB_OBJ := $(patsubst %.c,$(FUZZ_DIR)/obj/%.o,$(FUZZ_SRC))
FUZZ_BINS := $(patsubst %,$(FUZZ_DIR)/fuzz-%,$(FUZZ_TARGETS))
FUZZ_CFLAGS := -O1 -g -fno-omit-frame-pointer -fsanitize=fuzzer-no-link,$(FUZZ_SAN) -fno-sanitize-recover=all

$(FUZZ_DIR)/obj/%.o: %.c
	@mkdir -p $(dir $@)
	$(if $(V),,@echo "  FUZZCC  $<";)$(FUZZ_CC) $(CPPFLAGS) $(FUZZ_CPPFLAGS) $(CFLAGS) $(FUZZ_CFLAGS) -c -o $@ $<

# clang before 16 names target_clones functions "f.ifunc" unless every caller
# sees the attribute: vector kernels (no parsing in them) come from the C compiler.
$(FUZZ_DIR)/obj/engine/vecf.o: FUZZ_CC := $(CC)
$(FUZZ_DIR)/obj/engine/vecf.o: FUZZ_CFLAGS :=

$(FUZZ_DIR)/fuzz-%: $(FUZZ_DIR)/obj/tests/fuzz/fuzz-%.o $(FUZZ_LIB_OBJ)
	$(if $(V),,@echo "  FUZZLD  $@";)$(FUZZ_CC) $(LDFLAGS) -fsanitize=fuzzer,$(FUZZ_SAN) -o $@ $^ $(LDLIBS)

$(FUZZ_DIR)/fuzz-tokenizer: | $(FUZZ_VOCABS)

.PHONY: fuzz fuzz-build fuzz-merge
fuzz-build: $(FUZZ_BINS)

# One target after the other; each run's last lines (libFuzzer's final
# stats: executions, exec/s, cov, ft) are kept in $(FUZZ_DIR)/NAME.log.
# New inputs go to $(FUZZ_DIR)/corpus/NAME, crashes to $(FUZZ_DIR)/crash-NAME-*.
fuzz: $(FUZZ_BINS)
	@set -e; for t in $(FUZZ_TARGETS); do \
		mkdir -p $(FUZZ_DIR)/corpus/$$t; \
		echo "== fuzz-$$t for $(FUZZ_TIME)s (log: $(FUZZ_DIR)/$$t.log)"; \
		dict=; [ -f tests/fuzz/$$t.dict ] && dict=-dict=tests/fuzz/$$t.dict; \
		$(FUZZ_DIR)/fuzz-$$t -max_total_time=$(FUZZ_TIME) -print_final_stats=1 -timeout=30 \
			-artifact_prefix=$(FUZZ_DIR)/crash-$$t- $$dict $(FUZZ_ARGS) \
			$(FUZZ_DIR)/corpus/$$t tests/fuzz/corpus/$$t > $(FUZZ_DIR)/$$t.log 2>&1 || \
			{ tail -n 40 $(FUZZ_DIR)/$$t.log; exit 1; }; \
		grep -E '^#[0-9]+[[:space:]]+DONE|stat::number_of_executed_units|stat::average_exec_per_sec' $(FUZZ_DIR)/$$t.log; \
	done

# New inputs are cut to a size that keeps the checked-in corpus small.
fuzz-merge: $(FUZZ_BINS)
	@set -e; for t in $(FUZZ_TARGETS); do \
		mkdir -p $(FUZZ_DIR)/corpus/$$t tests/fuzz/corpus/$$t; \
		case $$t in gguf) ml=2048;; tokenizer) ml=128;; worker-request|sse) ml=512;; keeper-json) ml=700;; *) ml=4096;; esac; \
		mf=; [ $$t = keeper-json ] && mf=-use_counters=0; \
		$(FUZZ_DIR)/fuzz-$$t -merge=1 $$mf -max_len=$$ml tests/fuzz/corpus/$$t $(FUZZ_DIR)/corpus/$$t \
			> $(FUZZ_DIR)/$$t-merge.log 2>&1 || { tail -n 20 $(FUZZ_DIR)/$$t-merge.log; exit 1; }; \
		echo "fuzz-$$t: $$(ls tests/fuzz/corpus/$$t | wc -l) inputs"; \
	done

-include $(shell find $(FUZZ_DIR)/obj -name '*.d' 2>/dev/null)
