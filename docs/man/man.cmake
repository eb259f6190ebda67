# docs/man/man.cmake - what the man page build knows about an scdoc source.
#
# Included by docs/man/CMakeLists.txt at configure time for the functions
# below, and run at build time as a script to turn one page into roff:
#
#   cmake -DIN=page.N.scd -DOUTDIR=dir -DSCDOC=scdoc -DVERSION=1.0.0
#         -P man.cmake
#
# writes OUTDIR/manN/page.N (scdoc's output, with @MPROC_VERSION@ replaced
# by VERSION, and @MPROC_VERSION_MAJOR@, _MINOR@ and _PATCH@ by its parts)
# and one alias page OUTDIR/manN/NAME.N for every other name the page's NAME
# section lists, holding ".so manN/page.N" (what man-db and groff follow to
# the page).  ALIAS_SKIP (a comma-separated list) names
# that get no alias because they are pages of their own.

# mproc_man_parse(<scd file> <page var> <section var> <names var>)
#
# The page's name and section from its preamble ("mproc_pool(3) ..."), and
# the names in its NAME section: every word before the " - " that starts
# the description, in order ("a, b, c - what they do").  A malformed page
# is a fatal error naming the file.
function(mproc_man_parse scd page_var section_var names_var)
    file(READ "${scd}" text)
    if(NOT text MATCHES "^([A-Za-z0-9_.]+)\\(([0-9])\\)")
        message(FATAL_ERROR "${scd}: the first line must be the scdoc "
                            "preamble, e.g. mproc_pool(3) \"...\"")
    endif()
    set(page "${CMAKE_MATCH_1}")
    set(section "${CMAKE_MATCH_2}")
    if(NOT text MATCHES "\n# NAME\n([^#]*)\n# ")
        message(FATAL_ERROR "${scd}: no \"# NAME\" section followed by "
                            "another section")
    endif()
    set(name_text "${CMAKE_MATCH_1}")
    string(REPLACE "\n" " " name_text "${name_text}")
    string(FIND "${name_text}" " - " dash)
    if(dash LESS 0)
        message(FATAL_ERROR "${scd}: the NAME section must read "
                            "\"name, name - description\"")
    endif()
    string(SUBSTRING "${name_text}" 0 ${dash} name_text)
    # scdoc escapes (\_ and \*) are not part of a name.
    string(REPLACE "\\" "" name_text "${name_text}")
    string(REPLACE "," ";" name_list "${name_text}")
    set(names "")
    foreach(n IN LISTS name_list)
        string(STRIP "${n}" n)
        if(n STREQUAL "")
            continue()
        endif()
        if(NOT n MATCHES "^[A-Za-z_][A-Za-z0-9_]*$")
            message(FATAL_ERROR "${scd}: \"${n}\" in the NAME section is "
                                "not a C name")
        endif()
        list(APPEND names "${n}")
    endforeach()
    set(${page_var} "${page}" PARENT_SCOPE)
    set(${section_var} "${section}" PARENT_SCOPE)
    set(${names_var} "${names}" PARENT_SCOPE)
endfunction()

# mproc_man_exported(<out var> <header>...)
#
# The functions the headers declare with MPROC_EXPORT (comments removed;
# the name is the last word before the declaration's first parenthesis).
function(mproc_man_exported out_var)
    set(found "")
    foreach(h IN LISTS ARGN)
        file(READ "${h}" text)
        # Drop comments and preprocessor lines (the #define of MPROC_EXPORT
        # itself), then keep each MPROC_EXPORT declaration's head.
        string(REGEX REPLACE "/\\*([^*]|\\*+[^*/])*\\*+/" " " text "${text}")
        string(REGEX REPLACE "\n[ \t]*#[^\n]*" "\n" text "\n${text}")
        string(REGEX REPLACE
               "__attribute__[ \t]*\\(\\(([^()]|\\([^()]*\\))*\\)\\)"
               " " text "${text}")
        string(REGEX MATCHALL "MPROC_EXPORT[^;({]*\\(" heads "${text}")
        foreach(head IN LISTS heads)
            if(head MATCHES "([A-Za-z_][A-Za-z0-9_]*)[ \t\n]*\\($")
                list(APPEND found "${CMAKE_MATCH_1}")
            endif()
        endforeach()
    endforeach()
    list(REMOVE_DUPLICATES found)
    set(${out_var} "${found}" PARENT_SCOPE)
endfunction()

# ---- script mode: build one page and its aliases -------------------------

if(CMAKE_SCRIPT_MODE_FILE AND CMAKE_SCRIPT_MODE_FILE STREQUAL
                              CMAKE_CURRENT_LIST_FILE)
    cmake_minimum_required(VERSION 3.22)
    foreach(v IN ITEMS IN OUTDIR SCDOC VERSION)
        if(NOT DEFINED ${v})
            message(FATAL_ERROR "man.cmake: -D${v}=... is required")
        endif()
    endforeach()
    mproc_man_parse("${IN}" page section names)
    set(dir "${OUTDIR}/man${section}")
    file(MAKE_DIRECTORY "${dir}")
    set(out "${dir}/${page}.${section}")

    file(READ "${IN}" text)
    string(REPLACE "@MPROC_VERSION@" "${VERSION}" text "${text}")
    string(REPLACE "." ";" parts "${VERSION}")
    foreach(part IN ITEMS MAJOR MINOR PATCH)
        list(POP_FRONT parts value)
        string(REPLACE "@MPROC_VERSION_${part}@" "${value}" text "${text}")
    endforeach()
    file(WRITE "${out}.scd.tmp" "${text}")
    execute_process(COMMAND "${SCDOC}"
                    INPUT_FILE "${out}.scd.tmp"
                    OUTPUT_FILE "${out}.tmp"
                    ERROR_VARIABLE err
                    RESULT_VARIABLE rc)
    file(REMOVE "${out}.scd.tmp")
    if(NOT rc EQUAL 0 OR NOT err STREQUAL "")
        file(REMOVE "${out}.tmp")
        message(FATAL_ERROR "scdoc failed on ${IN} (${rc}): ${err}")
    endif()
    # scdoc asks for no hyphenation (.nh) before .TH, which the man macros
    # then turn back on; ask again after it, so that names such as
    # mproc_pool_put are never split across lines.
    file(READ "${out}.tmp" roff)
    string(REGEX REPLACE "(\n\\.TH [^\n]*\n)" "\\1.nh\n" roff "${roff}")
    file(WRITE "${out}" "${roff}")
    file(REMOVE "${out}.tmp")

    string(REPLACE "," ";" skip "${ALIAS_SKIP}")
    foreach(n IN LISTS names)
        if(n STREQUAL page OR n IN_LIST skip)
            continue()
        endif()
        file(WRITE "${dir}/${n}.${section}"
             ".so man${section}/${page}.${section}\n")
    endforeach()
endif()
