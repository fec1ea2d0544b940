# rbee: one Makefile for the engine, the daemons, the CLI and the tests.
#   make                 build everything into build/
#   make check           run the test suite (ends with "N passed, N failed, N skipped")
#   make check SANITIZE=address,undefined
#   make bench           print engine speed figures (see BENCHMARKS.md)
#   make install DESTDIR=... PREFIX=/usr

BUILD    ?= build
PREFIX   ?= /usr/local
BINDIR   ?= $(PREFIX)/bin
SBINDIR  ?= $(PREFIX)/sbin
BASHCOMPDIR ?= $(PREFIX)/share/bash-completion/completions
LIBEXECDIR ?= $(PREFIX)/libexec
CC       ?= cc
PKG_CONFIG ?= pkg-config
SANITIZE ?=
NVCC     ?= $(firstword $(wildcard /usr/local/cuda/bin/nvcc) $(shell command -v nvcc 2>/dev/null))

PKGS := libsystemd libmicrohttpd sqlite3 libcurl json-c openblas
PKG_CFLAGS := $(shell $(PKG_CONFIG) --cflags $(PKGS))
PKG_LIBS   := $(shell $(PKG_CONFIG) --libs $(PKGS))
ifeq ($(PKG_LIBS),)
$(error pkg-config could not find $(PKGS): install the build dependencies (see README))
endif

CFLAGS ?= -O2 -g
WARNINGS := -Wall -Wextra -Wno-unused-parameter -Wshadow -Wformat=2 -Wstrict-prototypes \
            -Wmissing-prototypes -Wpointer-arith -Wundef -Wwrite-strings -Wvla \
            -Wimplicit-fallthrough -Werror=implicit-function-declaration
override CFLAGS += -std=gnu11 -pthread -fno-strict-aliasing -fstack-protector-strong $(WARNINGS) -MMD -MP
override CPPFLAGS += -D_GNU_SOURCE -D_FORTIFY_SOURCE=2 -Icommon -Iengine $(PKG_CFLAGS) \
                     -DRBEE_SRCDIR='"$(CURDIR)"' -DRBEE_VERSION='"$(VERSION)"'
override LDFLAGS += -pthread
LDLIBS := $(PKG_LIBS) -lm

ifneq ($(SANITIZE),)
override CFLAGS += -fsanitize=$(SANITIZE) -fno-omit-frame-pointer -fno-sanitize-recover=all
override LDFLAGS += -fsanitize=$(SANITIZE)
endif

VERSION := $(shell cat VERSION 2>/dev/null || echo 0.1.0)

# CUDA is built only when nvcc exists or CUDA=1; nothing else needs it.
ifeq ($(CUDA),)
CUDA := $(if $(NVCC),1,0)
endif

ENGINE_SRC := $(wildcard engine/*.c)
COMMON_SRC := $(wildcard common/*.c)
ENGINE_OBJ := $(patsubst %.c,$(BUILD)/obj/%.o,$(ENGINE_SRC))
COMMON_OBJ := $(patsubst %.c,$(BUILD)/obj/%.o,$(COMMON_SRC))

# The CUDA backend (engine/cuda/): kernels for sm_80 and sm_90 plus PTX that
# newer cards compile at load. The runtime is linked statically and loads
# the driver itself, so every program still starts (and runs on the CPU)
# where libcuda.so is missing; cuBLAS is opened at run time. CUDA=0: the
# stubs in engine/cuda/none.c, and nothing needs CUDA.
ifeq ($(CUDA),1)
ifeq ($(NVCC),)
$(error CUDA=1 but nvcc was not found: set NVCC=/path/to/nvcc or build with CUDA=0)
endif
CUDA_HOME   ?= $(abspath $(dir $(NVCC))..)
CUDA_LIBDIR ?= $(firstword $(wildcard $(CUDA_HOME)/lib64 $(CUDA_HOME)/lib/x86_64-linux-gnu) $(CUDA_HOME)/lib64)
CUDA_ARCHS  ?= -gencode arch=compute_80,code=sm_80 -gencode arch=compute_90,code=sm_90 \
               -gencode arch=compute_90,code=compute_90
NVCCFLAGS   ?= -O3 -lineinfo
CUDA_C_OBJ  := $(patsubst %.c,$(BUILD)/obj/%.o,$(filter-out engine/cuda/none.c,$(wildcard engine/cuda/*.c)))
ENGINE_OBJ  += $(CUDA_C_OBJ) $(patsubst %.cu,$(BUILD)/obj/%.o,$(wildcard engine/cuda/*.cu))
$(CUDA_C_OBJ): override CPPFLAGS += -isystem $(CUDA_HOME)/include -DRBEE_CUDA_LIBDIR='"$(CUDA_LIBDIR)"'
LDLIBS      += -L$(CUDA_LIBDIR) -lcudart_static -ldl -lrt -lstdc++

$(BUILD)/obj/%.o: %.cu
	@mkdir -p $(dir $@)
	$(if $(V),,@echo "  NVCC    $<";)$(NVCC) -std=c++17 $(NVCCFLAGS) $(CUDA_ARCHS) -Icommon -Iengine \
		-Xcompiler -Wall,-Wextra,-Wno-unused-parameter,-fno-strict-aliasing -MMD -MP -MF $(@:.o=.d) -c -o $@ $<
else
ENGINE_OBJ  += $(BUILD)/obj/engine/cuda/none.o
endif
WORKER_SRC := $(filter-out worker/main.c,$(wildcard worker/*.c))
HIVE_SRC   := $(filter-out hive/main.c,$(wildcard hive/*.c))
KEEPER_SRC := $(filter-out keeper/main.c,$(wildcard keeper/*.c))
WORKER_OBJ := $(patsubst %.c,$(BUILD)/obj/%.o,$(WORKER_SRC))
HIVE_OBJ   := $(patsubst %.c,$(BUILD)/obj/%.o,$(HIVE_SRC))
KEEPER_OBJ := $(patsubst %.c,$(BUILD)/obj/%.o,$(KEEPER_SRC))

LIBENGINE := $(BUILD)/librbee-engine.a
LIBCOMMON := $(BUILD)/librbee-common.a

TOOLS := $(BUILD)/rbee-generate $(BUILD)/rbee-bench $(BUILD)/rbee-mkmodel
DAEMONS := $(if $(wildcard worker/main.c),$(BUILD)/rbee-workerd) \
           $(if $(wildcard hive/main.c),$(BUILD)/rbee-hive) \
           $(if $(wildcard keeper/main.c),$(BUILD)/rbee)
PROGRAMS := $(TOOLS) $(DAEMONS)

TEST_SRC := $(wildcard tests/test-*.c)
TESTS := $(patsubst tests/%.c,$(BUILD)/tests/%,$(TEST_SRC))

.PHONY: all check bench install clean
.SECONDARY:
all: $(PROGRAMS)

# V=1 shows the full command lines.
Q := $(if $(V),,@)

$(BUILD)/obj/%.o: %.c
	@mkdir -p $(dir $@)
	$(if $(V),,@echo "  CC      $<";)$(CC) $(CPPFLAGS) $(CFLAGS) -c -o $@ $<

$(LIBENGINE): $(ENGINE_OBJ)
	@rm -f $@
	$(Q)$(AR) rcs $@ $^

$(LIBCOMMON): $(COMMON_OBJ)
	@rm -f $@
	$(AR) rcs $@ $^ $(if $(COMMON_OBJ),,)

$(BUILD)/rbee-generate: $(BUILD)/obj/engine/tools/generate.o $(BUILD)/obj/engine/tools/cli.o $(LIBENGINE)
$(BUILD)/rbee-bench: $(BUILD)/obj/engine/tools/bench.o $(BUILD)/obj/engine/tools/cli.o $(LIBENGINE)
$(BUILD)/rbee-mkmodel: $(BUILD)/obj/engine/tools/mkmodel.o $(LIBENGINE)
# make bench's table and chart; a development tool, not installed.
$(BUILD)/rbee-bench-plot: $(BUILD)/obj/engine/tools/bench-plot.o
$(BUILD)/rbee-workerd: $(BUILD)/obj/worker/main.o $(WORKER_OBJ) $(LIBCOMMON) $(LIBENGINE)
$(BUILD)/rbee-hive: $(BUILD)/obj/hive/main.o $(HIVE_OBJ) $(LIBCOMMON) $(LIBENGINE)
$(BUILD)/rbee: $(BUILD)/obj/keeper/main.o $(KEEPER_OBJ) $(LIBCOMMON) $(LIBENGINE)

$(PROGRAMS) $(BUILD)/rbee-bench-plot:
	@mkdir -p $(dir $@)
	$(if $(V),,@echo "  LD      $@";)$(CC) $(LDFLAGS) -o $@ $(filter %.o %.a,$^) $(LDLIBS)

# Every test links the harness and every library; the linker keeps what it uses.
$(BUILD)/tests/%: $(BUILD)/obj/tests/%.o $(BUILD)/obj/tests/harness.o \
                  $(WORKER_OBJ) $(HIVE_OBJ) $(KEEPER_OBJ) $(LIBCOMMON) $(LIBENGINE)
	@mkdir -p $(dir $@)
	$(if $(V),,@echo "  LD      $@";)$(CC) $(LDFLAGS) -o $@ $(filter %.o %.a,$^) $(LDLIBS)

# The end-to-end run under a real systemd comes last; it skips itself unless
# root (RBEE_E2E=0 skips it too) and prints its counts like the others.
check: $(PROGRAMS) $(TESTS)
	@RBEE_BUILD=$(abspath $(BUILD)) ./tests/run-tests.sh $(TESTS) tests/e2e/run.sh

bench: $(PROGRAMS) $(BUILD)/rbee-bench-plot
	@./tests/bench.sh $(BUILD)

# Loopback load on the hive (tests/load/run.sh); SOAK=600 adds a 10-minute
# soak that checks RSS and fds stay flat. With SANITIZE=address, LeakSanitizer.
.PHONY: load
load: $(PROGRAMS) $(BUILD)/rbee-load
	@RBEE_SOAK_SECONDS=$(or $(SOAK),0) ./tests/load/run.sh $(abspath $(BUILD))

$(BUILD)/rbee-load: $(BUILD)/obj/tests/load/rbee-load.o
	$(if $(V),,@echo "  LD      $@";)$(CC) $(LDFLAGS) -o $@ $^ -lm

install: $(PROGRAMS)
	install -d $(DESTDIR)$(BINDIR)
	install -m 0755 $(TOOLS) $(DESTDIR)$(BINDIR)/
	$(if $(wildcard $(BUILD)/rbee),install -m 0755 $(BUILD)/rbee $(DESTDIR)$(BINDIR)/)
	install -d $(DESTDIR)$(BASHCOMPDIR)
	install -m 0644 keeper/rbee.bash-completion $(DESTDIR)$(BASHCOMPDIR)/rbee
	$(if $(wildcard $(BUILD)/rbee-hive),install -d $(DESTDIR)$(SBINDIR) && install -m 0755 $(BUILD)/rbee-hive $(DESTDIR)$(SBINDIR)/)
	$(if $(wildcard $(BUILD)/rbee-workerd),install -d $(DESTDIR)$(SBINDIR) && install -m 0755 $(BUILD)/rbee-workerd $(DESTDIR)$(SBINDIR)/)

clean:
	rm -rf $(BUILD)

-include $(shell find $(BUILD)/obj -name '*.d' 2>/dev/null)

# ---------------------------------------------------------------------------
# Packaging, systemd units and end-to-end tests (units/, debian/, tests/e2e/).
#   make install-units DESTDIR=...   units, sysusers.d, tmpfiles.d, polkit rule, man pages
#   make deb                         Debian packages into $(BUILD)/deb/ (dpkg-buildpackage)
#   make check-e2e                   the packages under a real systemd (root; skips otherwise)
SYSTEMDUNITDIR ?= $(shell $(PKG_CONFIG) --variable=systemdsystemunitdir systemd 2>/dev/null || echo /lib/systemd/system)
SYSUSERSDIR    ?= /usr/lib/sysusers.d
TMPFILESDIR    ?= /usr/lib/tmpfiles.d
POLKITRULESDIR ?= /usr/share/polkit-1/rules.d
MANDIR         ?= $(PREFIX)/share/man
UNIT_FILES := units/rbee-hive.socket units/rbee-hive.service units/rbee-worker@.socket \
              units/rbee-worker@.service units/rbee.slice

.PHONY: install-units install-cuda deb check-e2e
install-units:
	install -d $(DESTDIR)$(SYSTEMDUNITDIR) $(DESTDIR)$(SYSUSERSDIR) $(DESTDIR)$(TMPFILESDIR) \
		$(DESTDIR)$(POLKITRULESDIR) $(DESTDIR)$(MANDIR)/man1 $(DESTDIR)$(MANDIR)/man8
	for u in $(UNIT_FILES); do \
		sed 's|/usr/sbin/|$(SBINDIR)/|g' $$u > $(DESTDIR)$(SYSTEMDUNITDIR)/$${u#units/} && \
		chmod 0644 $(DESTDIR)$(SYSTEMDUNITDIR)/$${u#units/} || exit 1; done
	install -m 0644 units/rbee.sysusers $(DESTDIR)$(SYSUSERSDIR)/rbee.conf
	install -m 0644 units/rbee.tmpfiles $(DESTDIR)$(TMPFILESDIR)/rbee.conf
	install -m 0644 units/50-rbee.rules $(DESTDIR)$(POLKITRULESDIR)/50-rbee.rules
	install -m 0644 units/man/rbee-hive.8 units/man/rbee-workerd.8 $(DESTDIR)$(MANDIR)/man8/
	install -m 0644 units/man/rbee-generate.1 units/man/rbee-bench.1 units/man/rbee-mkmodel.1 \
		$(DESTDIR)$(MANDIR)/man1/
	$(if $(wildcard keeper/rbee.1),install -m 0644 keeper/rbee.1 $(DESTDIR)$(MANDIR)/man1/)

# The rbee-worker-cuda flavour, from a CUDA build (make BUILD=build-cuda CUDA=1
# install-cuda): that build's worker as rbee-workerd-cuda, next to the CPU one,
# and the drop-ins that make rbee-worker@.service run it with the NVIDIA
# devices and let the hive see them (units/cuda/).
install-cuda: $(BUILD)/rbee-workerd
	@[ "$(CUDA)" = 1 ] || { echo "install-cuda needs a CUDA build (CUDA=1)" >&2; exit 1; }
	install -d $(DESTDIR)$(SBINDIR) $(DESTDIR)$(MANDIR)/man8 \
		$(DESTDIR)$(SYSTEMDUNITDIR)/rbee-worker@.service.d $(DESTDIR)$(SYSTEMDUNITDIR)/rbee-hive.service.d
	install -m 0755 $(BUILD)/rbee-workerd $(DESTDIR)$(SBINDIR)/rbee-workerd-cuda
	sed 's|/usr/sbin/|$(SBINDIR)/|g' units/cuda/rbee-worker-cuda.conf > \
		$(DESTDIR)$(SYSTEMDUNITDIR)/rbee-worker@.service.d/cuda.conf
	chmod 0644 $(DESTDIR)$(SYSTEMDUNITDIR)/rbee-worker@.service.d/cuda.conf
	install -m 0644 units/cuda/rbee-hive-cuda.conf $(DESTDIR)$(SYSTEMDUNITDIR)/rbee-hive.service.d/cuda.conf
	install -m 0644 units/man/rbee-workerd-cuda.8 $(DESTDIR)$(MANDIR)/man8/

# Built from a copy of the tracked and new files, so that dpkg-buildpackage
# neither writes next to the checkout nor sees build/.
deb:
	./tests/e2e/build-deb.sh $(abspath $(BUILD))/deb

check-e2e:
	@./tests/e2e/run.sh

include tests/fuzz/fuzz.mk
