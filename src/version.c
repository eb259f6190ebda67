/* The version the library was built as (mproc/version.h, generated). */
#include "mproc/version.h"

unsigned mproc_version(void)
{
    return (unsigned)MPROC_VERSION_NUMBER;
}

const char *mproc_version_string(void)
{
    return MPROC_VERSION_STRING;
}
