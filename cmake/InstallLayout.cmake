# Where Edgepin's non-binary files go, decided when installing rather than
# when configuring: the prefix is only known then (`cmake --install build
# --prefix /usr`, or CPack's /usr staging), and the systemd units must name
# the binaries and the configuration directory where they actually land.
#
# Included by cmake/Packaging.cmake at configure time (for the Debian
# conffiles) and by the install script (cmake_install.cmake) at install time.

# Sets <out> to the absolute system configuration directory for <prefix>,
# following GNUInstallDirs: an absolute <sysconfdir> is kept; a relative one
# lands under the prefix, except that prefix /usr uses /etc and a prefix
# under /opt uses /etc/opt/... (where distributions put them).
function(edgepin_full_sysconfdir prefix sysconfdir out)
  if(IS_ABSOLUTE "${sysconfdir}")
    set(dir "${sysconfdir}")
  elseif(prefix STREQUAL "/usr" AND sysconfdir STREQUAL "etc")
    set(dir "/etc")
  elseif(prefix MATCHES "^/opt/" AND sysconfdir STREQUAL "etc")
    set(dir "/etc${prefix}")
  else()
    set(dir "${prefix}/${sysconfdir}")
  endif()
  set(${out} "${dir}" PARENT_SCOPE)
endfunction()

# Sets <out> to <dir> made absolute under <prefix> (unchanged if absolute).
function(edgepin_full_dir prefix dir out)
  if(IS_ABSOLUTE "${dir}")
    set(${out} "${dir}" PARENT_SCOPE)
  else()
    set(${out} "${prefix}/${dir}" PARENT_SCOPE)
  endif()
endfunction()

# The example configuration files installed into the configuration
# directory: JSON examples and the reference. Never keys or certificates
# (conf/pki and conf/keys exist only where deploy/make-pki.sh ran).
set(EDGEPIN_CONFIG_FILES cluster.json lb.json node-proxy.json README.md)

# The unit files of deploy/systemd/: the two daemons and, for each, the
# configuration-push watcher (.path) and the check-then-reload service it
# starts.
set(EDGEPIN_UNITS
    edgepin-lb.service edgepin-node-proxy@.service
    edgepin-lb-config.path edgepin-lb-config.service
    edgepin-node-proxy-config@.path edgepin-node-proxy-config@.service)

# The repository's unit files are written for the Debian layout; these are
# the paths they name, rewritten for any other install.
set(EDGEPIN_UNIT_BINDIR "/usr/bin")
set(EDGEPIN_UNIT_CONFDIR "/etc/edgepin")
set(EDGEPIN_UNIT_DOCDIR "/usr/share/doc/edgepin")

# Install-time step: installs the example configuration, the systemd units
# (with their paths rewritten for this prefix) and the sysusers.d file.
# Runs inside cmake_install.cmake, so CMAKE_INSTALL_PREFIX is the prefix of
# this install and file(INSTALL) applies DESTDIR and records the manifest.
#   SOURCE_DIR, BINARY_DIR  the project's trees
#   BINDIR, SYSCONFDIR, DOCDIR, UNITDIR, SYSUSERSDIR  as configured
#                           (relative to the prefix, or absolute)
#   SYSTEMD                 ON to install the units and the sysusers.d file
function(edgepin_install_layout)
  cmake_parse_arguments(ARG "" "SOURCE_DIR;BINARY_DIR;BINDIR;SYSCONFDIR;DOCDIR;UNITDIR;SYSUSERSDIR;SYSTEMD" "" ${ARGN})
  set(prefix "${CMAKE_INSTALL_PREFIX}")
  edgepin_full_dir("${prefix}" "${ARG_BINDIR}" bindir)
  edgepin_full_dir("${prefix}" "${ARG_DOCDIR}" docdir)
  edgepin_full_sysconfdir("${prefix}" "${ARG_SYSCONFDIR}" sysconfdir)
  set(confdir "${sysconfdir}/edgepin")

  # An operator's edited configuration is never overwritten by a later
  # `cmake --install` (the Debian package handles this through conffiles).
  set(config_files "")
  foreach(name IN LISTS EDGEPIN_CONFIG_FILES)
    if(EXISTS "$ENV{DESTDIR}${confdir}/${name}")
      message(STATUS "Keeping existing: $ENV{DESTDIR}${confdir}/${name}")
    else()
      list(APPEND config_files "${ARG_SOURCE_DIR}/conf/${name}")
    endif()
  endforeach()
  if(config_files)
    file(INSTALL DESTINATION "${confdir}" TYPE FILE
         PERMISSIONS OWNER_READ OWNER_WRITE GROUP_READ WORLD_READ
         FILES ${config_files})
  endif()

  if(NOT ARG_SYSTEMD)
    return()
  endif()
  edgepin_full_dir("${prefix}" "${ARG_UNITDIR}" unitdir)
  edgepin_full_dir("${prefix}" "${ARG_SYSUSERSDIR}" sysusersdir)
  set(staged "${ARG_BINARY_DIR}/edgepin-install/systemd")
  file(MAKE_DIRECTORY "${staged}")
  set(units "")
  foreach(unit IN LISTS EDGEPIN_UNITS)
    file(READ "${ARG_SOURCE_DIR}/deploy/systemd/${unit}" text)
    string(REPLACE "${EDGEPIN_UNIT_BINDIR}/" "${bindir}/" text "${text}")
    string(REPLACE "${EDGEPIN_UNIT_CONFDIR}" "${confdir}" text "${text}")
    string(REPLACE "${EDGEPIN_UNIT_DOCDIR}" "${docdir}" text "${text}")
    file(WRITE "${staged}/${unit}" "${text}")
    list(APPEND units "${staged}/${unit}")
  endforeach()
  file(INSTALL DESTINATION "${unitdir}" TYPE FILE
       PERMISSIONS OWNER_READ OWNER_WRITE GROUP_READ WORLD_READ
       FILES ${units})
  file(INSTALL DESTINATION "${sysusersdir}" TYPE FILE
       PERMISSIONS OWNER_READ OWNER_WRITE GROUP_READ WORLD_READ
       FILES "${ARG_SOURCE_DIR}/deploy/systemd/edgepin.sysusers.conf"
       RENAME edgepin.conf)
endfunction()
