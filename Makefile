# Build glue for installing bus: the command, the C library (libbus), the
# manual pages and the shell completions.
#
#   make                                  build (cargo) and write the completions
#   make install [PREFIX=/usr/local] [DESTDIR=]
#   make uninstall [PREFIX=/usr/local] [DESTDIR=]
#
# `make install` installs what `make` built and runs no cargo itself, unless
# something is missing (so `sudo make install` needs no Rust toolchain);
# `make` brings everything up to date. The build goes to TARGET_DIR
# (default target; cargo is told so). DESTDIR is prepended to every
# installed path, for packaging.

PREFIX = /usr/local
DESTDIR =
BINDIR = $(PREFIX)/bin
LIBDIR = $(PREFIX)/lib
INCLUDEDIR = $(PREFIX)/include
DATADIR = $(PREFIX)/share
MANDIR = $(DATADIR)/man

CARGO = cargo
TARGET_DIR = target
RELEASE = $(TARGET_DIR)/release
COMPLETIONS = $(TARGET_DIR)/completions

# The interface of libbus is the original libbus 3.1 (soname libbus.so.3);
# the last number is ours. The version pkg-config reports is the project's,
# the workspace version in Cargo.toml (that of the crate, of `bus --version`
# and of the Erlang release).
LIB_MAJOR = 3
LIB_VERSION = $(LIB_MAJOR).1.0

# Every manual page found in these directories is installed; there may be
# none.
MAN_PAGES = src/bin/man/*.1 src/bin/man/*.5 native/libbus/man/*.3 native/libbus/man/*.7

CARGO_BUILD = CARGO_TARGET_DIR=$(TARGET_DIR) $(CARGO) build --release

all:
	$(CARGO_BUILD) -p bus --bin bus -p libbus
	$(MAKE) completions

completions: $(COMPLETIONS)/bus.bash $(COMPLETIONS)/_bus $(COMPLETIONS)/bus.fish

# Built only when missing: `make` (above) is what brings them up to date.
$(RELEASE)/bus:
	$(CARGO_BUILD) -p bus --bin bus
$(RELEASE)/libbus.so $(RELEASE)/libbus.a:
	$(CARGO_BUILD) -p libbus

$(COMPLETIONS)/bus.bash: $(RELEASE)/bus
	mkdir -p $(COMPLETIONS)
	$(RELEASE)/bus --completions bash >$@.tmp && mv $@.tmp $@
$(COMPLETIONS)/_bus: $(RELEASE)/bus
	mkdir -p $(COMPLETIONS)
	$(RELEASE)/bus --completions zsh >$@.tmp && mv $@.tmp $@
$(COMPLETIONS)/bus.fish: $(RELEASE)/bus
	mkdir -p $(COMPLETIONS)
	$(RELEASE)/bus --completions fish >$@.tmp && mv $@.tmp $@

install: install-bin install-lib install-man install-completions

install-bin: $(RELEASE)/bus
	install -d $(DESTDIR)$(BINDIR)
	install -m 755 $(RELEASE)/bus $(DESTDIR)$(BINDIR)/bus

# lib/libbus.so.$(LIB_VERSION) with the symlinks libbus.so.3 (the soname)
# and libbus.so; lib/libbus.a; include/bus.h; lib/pkgconfig/bus.pc.
install-lib: $(RELEASE)/libbus.so $(RELEASE)/libbus.a
	install -d $(DESTDIR)$(LIBDIR)/pkgconfig $(DESTDIR)$(INCLUDEDIR)
	install -m 755 $(RELEASE)/libbus.so $(DESTDIR)$(LIBDIR)/libbus.so.$(LIB_VERSION)
	ln -sf libbus.so.$(LIB_VERSION) $(DESTDIR)$(LIBDIR)/libbus.so.$(LIB_MAJOR)
	ln -sf libbus.so.$(LIB_VERSION) $(DESTDIR)$(LIBDIR)/libbus.so
	install -m 644 $(RELEASE)/libbus.a $(DESTDIR)$(LIBDIR)/libbus.a
	install -m 644 native/libbus/include/bus.h $(DESTDIR)$(INCLUDEDIR)/bus.h
	version=$$(sed -n '/^\[workspace\.package\]/,/^\[/s/^version *= *"\(.*\)"/\1/p' Cargo.toml) && \
	test -n "$$version" && \
	sed -e 's|@PREFIX@|$(PREFIX)|g' -e "s|@VERSION@|$$version|g" native/libbus/bus.pc.in \
		>$(DESTDIR)$(LIBDIR)/pkgconfig/bus.pc
	chmod 644 $(DESTDIR)$(LIBDIR)/pkgconfig/bus.pc

install-man:
	for page in $(MAN_PAGES); do \
		[ -f "$$page" ] || continue; \
		dir=$(DESTDIR)$(MANDIR)/man$${page##*.}; \
		install -d "$$dir" && install -m 644 "$$page" "$$dir/" || exit 1; \
	done

install-completions: completions
	install -d $(DESTDIR)$(DATADIR)/bash-completion/completions \
		$(DESTDIR)$(DATADIR)/zsh/site-functions \
		$(DESTDIR)$(DATADIR)/fish/vendor_completions.d
	install -m 644 $(COMPLETIONS)/bus.bash $(DESTDIR)$(DATADIR)/bash-completion/completions/bus
	install -m 644 $(COMPLETIONS)/_bus $(DESTDIR)$(DATADIR)/zsh/site-functions/_bus
	install -m 644 $(COMPLETIONS)/bus.fish $(DESTDIR)$(DATADIR)/fish/vendor_completions.d/bus.fish

uninstall:
	rm -f $(DESTDIR)$(BINDIR)/bus
	rm -f $(DESTDIR)$(LIBDIR)/libbus.so.$(LIB_VERSION) $(DESTDIR)$(LIBDIR)/libbus.so.$(LIB_MAJOR) \
		$(DESTDIR)$(LIBDIR)/libbus.so $(DESTDIR)$(LIBDIR)/libbus.a \
		$(DESTDIR)$(INCLUDEDIR)/bus.h $(DESTDIR)$(LIBDIR)/pkgconfig/bus.pc
	for page in $(MAN_PAGES); do \
		[ -f "$$page" ] || continue; \
		rm -f $(DESTDIR)$(MANDIR)/man$${page##*.}/$${page##*/}; \
	done
	rm -f $(DESTDIR)$(DATADIR)/bash-completion/completions/bus \
		$(DESTDIR)$(DATADIR)/zsh/site-functions/_bus \
		$(DESTDIR)$(DATADIR)/fish/vendor_completions.d/bus.fish

clean:
	rm -rf $(COMPLETIONS)

.PHONY: all completions install install-bin install-lib install-man install-completions uninstall clean
