/*
 * A stand-in for libnvidia-ml.so.1, so the agent's real loading path (dlopen through
 * nvml-wrapper, symbol lookup, versioned structs) runs on machines without a GPU.
 *
 * It exports exactly what nvml-wrapper 0.13 resolves for the agent's calls:
 *   nvmlInit_v2, nvmlShutdown (Nvml's Drop calls it and panics if it is missing),
 *   nvmlErrorString, nvmlDeviceGetCount_v2, nvmlDeviceGetHandleByIndex_v2,
 *   nvmlDeviceGetName, nvmlDeviceGetUUID, nvmlDeviceGetMemoryInfo_v2 (what
 *   Device::memory_info calls, with a versioned nvmlMemory_v2_t),
 *   nvmlDeviceGetMemoryInfo (v1, for tools that still call it),
 *   nvmlDeviceGetUtilizationRates, nvmlDeviceGetComputeRunningProcesses_v3.
 *
 * Two GPUs. Memory comes from a state file holding `used0 total0 used1 total1` (bytes), read
 * on every call so a test can make memory climb between refreshes. The file is
 * FAKE_NVML_STATE_PATH when compiled with -DFAKE_NVML_STATE_PATH="\"/path\"" (what the tests
 * do: no environment variables to race on), else $FAKE_NVML_STATE, else fixed numbers.
 * GPU 0 runs two compute processes (pids 4242, 4243) and reports utilization 37%;
 * GPU 1 runs none and answers NOT_SUPPORTED for utilization, like some datacenter parts.
 *
 * Build: cc -shared -fPIC -o libnvidia-ml.so.1 fake_nvml.c
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

typedef int nvmlReturn_t;

enum {
    NVML_SUCCESS = 0,
    NVML_ERROR_UNINITIALIZED = 1,
    NVML_ERROR_INVALID_ARGUMENT = 2,
    NVML_ERROR_NOT_SUPPORTED = 3,
    NVML_ERROR_INSUFFICIENT_SIZE = 7,
    NVML_ERROR_ARGUMENT_VERSION_MISMATCH = 25,
    NVML_ERROR_UNKNOWN = 999,
};

#define FAKE_GPUS 2u
#define GIB (1024ull * 1024ull * 1024ull)

struct fake_device {
    unsigned int index;
};
typedef struct fake_device *nvmlDevice_t;

/* Layouts as in nvml.h (and nvml-wrapper-sys 0.10's bindings). */
typedef struct {
    unsigned int version;
    unsigned long long total;
    unsigned long long reserved;
    unsigned long long free;
    unsigned long long used;
} nvmlMemory_v2_t;

typedef struct {
    unsigned long long total;
    unsigned long long free;
    unsigned long long used;
} nvmlMemory_t;

typedef struct {
    unsigned int gpu;
    unsigned int memory;
} nvmlUtilization_t;

typedef struct {
    unsigned int pid;
    unsigned long long usedGpuMemory;
    unsigned int gpuInstanceId;
    unsigned int computeInstanceId;
} nvmlProcessInfo_t;

/* NVML_STRUCT_VERSION(Memory, 2): the caller must say which layout it passes. */
#define NVML_MEMORY_V2 ((unsigned int)(sizeof(nvmlMemory_v2_t) | (2u << 24)))

static struct fake_device devices[FAKE_GPUS] = {{0}, {1}};
static int init_count;

static int valid(nvmlDevice_t d) {
    return init_count > 0 && (d == &devices[0] || d == &devices[1]);
}

/* Reads `used0 total0 used1 total1`; fixed numbers when no file is configured. */
static nvmlReturn_t read_state(unsigned int gpu, unsigned long long *used,
                               unsigned long long *total) {
    unsigned long long v[4] = {10 * GIB, 80 * GIB, 1 * GIB, 80 * GIB};
#ifdef FAKE_NVML_STATE_PATH
    const char *path = FAKE_NVML_STATE_PATH;
#else
    const char *path = getenv("FAKE_NVML_STATE");
#endif
    if (path != NULL && path[0] != '\0') {
        FILE *f = fopen(path, "r");
        if (f == NULL) {
            return NVML_ERROR_UNKNOWN;
        }
        int n = fscanf(f, "%llu %llu %llu %llu", &v[0], &v[1], &v[2], &v[3]);
        fclose(f);
        if (n != 4) {
            return NVML_ERROR_UNKNOWN;
        }
    }
    *used = v[2 * gpu];
    *total = v[2 * gpu + 1];
    return NVML_SUCCESS;
}

static nvmlReturn_t copy_string(char *buf, unsigned int len, const char *s) {
    if (buf == NULL) {
        return NVML_ERROR_INVALID_ARGUMENT;
    }
    if (strlen(s) + 1 > len) {
        return NVML_ERROR_INSUFFICIENT_SIZE;
    }
    memcpy(buf, s, strlen(s) + 1);
    return NVML_SUCCESS;
}

nvmlReturn_t nvmlInit_v2(void) {
    init_count++;
    return NVML_SUCCESS;
}

nvmlReturn_t nvmlShutdown(void) {
    if (init_count == 0) {
        return NVML_ERROR_UNINITIALIZED;
    }
    init_count--;
    return NVML_SUCCESS;
}

const char *nvmlErrorString(nvmlReturn_t r) {
    switch (r) {
    case NVML_SUCCESS: return "Success";
    case NVML_ERROR_UNINITIALIZED: return "Uninitialized";
    case NVML_ERROR_INVALID_ARGUMENT: return "Invalid Argument";
    case NVML_ERROR_NOT_SUPPORTED: return "Not Supported";
    case NVML_ERROR_INSUFFICIENT_SIZE: return "Insufficient Size";
    case NVML_ERROR_ARGUMENT_VERSION_MISMATCH: return "Argument Version Mismatch";
    default: return "Unknown Error";
    }
}

nvmlReturn_t nvmlDeviceGetCount_v2(unsigned int *count) {
    if (init_count == 0) {
        return NVML_ERROR_UNINITIALIZED;
    }
    if (count == NULL) {
        return NVML_ERROR_INVALID_ARGUMENT;
    }
    *count = FAKE_GPUS;
    return NVML_SUCCESS;
}

nvmlReturn_t nvmlDeviceGetHandleByIndex_v2(unsigned int index, nvmlDevice_t *device) {
    if (init_count == 0) {
        return NVML_ERROR_UNINITIALIZED;
    }
    if (index >= FAKE_GPUS || device == NULL) {
        return NVML_ERROR_INVALID_ARGUMENT;
    }
    *device = &devices[index];
    return NVML_SUCCESS;
}

nvmlReturn_t nvmlDeviceGetName(nvmlDevice_t d, char *name, unsigned int len) {
    char buf[64];
    if (!valid(d)) {
        return NVML_ERROR_INVALID_ARGUMENT;
    }
    snprintf(buf, sizeof buf, "Fake GPU %u", d->index);
    return copy_string(name, len, buf);
}

nvmlReturn_t nvmlDeviceGetUUID(nvmlDevice_t d, char *uuid, unsigned int len) {
    char buf[64];
    if (!valid(d)) {
        return NVML_ERROR_INVALID_ARGUMENT;
    }
    snprintf(buf, sizeof buf, "GPU-fake-%04u", d->index);
    return copy_string(uuid, len, buf);
}

nvmlReturn_t nvmlDeviceGetMemoryInfo_v2(nvmlDevice_t d, nvmlMemory_v2_t *mem) {
    unsigned long long used, total;
    if (!valid(d) || mem == NULL) {
        return NVML_ERROR_INVALID_ARGUMENT;
    }
    if (mem->version != NVML_MEMORY_V2) {
        return NVML_ERROR_ARGUMENT_VERSION_MISMATCH;
    }
    nvmlReturn_t r = read_state(d->index, &used, &total);
    if (r != NVML_SUCCESS) {
        return r;
    }
    mem->total = total;
    mem->reserved = 0;
    mem->used = used;
    mem->free = used > total ? 0 : total - used;
    return NVML_SUCCESS;
}

nvmlReturn_t nvmlDeviceGetMemoryInfo(nvmlDevice_t d, nvmlMemory_t *mem) {
    unsigned long long used, total;
    if (!valid(d) || mem == NULL) {
        return NVML_ERROR_INVALID_ARGUMENT;
    }
    nvmlReturn_t r = read_state(d->index, &used, &total);
    if (r != NVML_SUCCESS) {
        return r;
    }
    mem->total = total;
    mem->used = used;
    mem->free = used > total ? 0 : total - used;
    return NVML_SUCCESS;
}

nvmlReturn_t nvmlDeviceGetUtilizationRates(nvmlDevice_t d, nvmlUtilization_t *u) {
    if (!valid(d) || u == NULL) {
        return NVML_ERROR_INVALID_ARGUMENT;
    }
    if (d->index == 1) {
        return NVML_ERROR_NOT_SUPPORTED;
    }
    u->gpu = 37;
    u->memory = 20;
    return NVML_SUCCESS;
}

/* Size query with infos == NULL as in NVML: INSUFFICIENT_SIZE plus the count, or SUCCESS
 * with 0 when nothing runs. */
nvmlReturn_t nvmlDeviceGetComputeRunningProcesses_v3(nvmlDevice_t d, unsigned int *count,
                                                     nvmlProcessInfo_t *infos) {
    unsigned long long used, total;
    if (!valid(d) || count == NULL) {
        return NVML_ERROR_INVALID_ARGUMENT;
    }
    unsigned int n = d->index == 0 ? 2u : 0u;
    if (*count < n || (n > 0 && infos == NULL)) {
        *count = n;
        return NVML_ERROR_INSUFFICIENT_SIZE;
    }
    *count = n;
    if (n == 0) {
        return NVML_SUCCESS;
    }
    nvmlReturn_t r = read_state(d->index, &used, &total);
    if (r != NVML_SUCCESS) {
        return r;
    }
    infos[0].pid = 4242;
    infos[0].usedGpuMemory = used - used / 4;
    infos[1].pid = 4243;
    infos[1].usedGpuMemory = used / 4;
    for (unsigned int i = 0; i < n; i++) {
        infos[i].gpuInstanceId = 0xFFFFFFFFu;
        infos[i].computeInstanceId = 0xFFFFFFFFu;
    }
    return NVML_SUCCESS;
}
