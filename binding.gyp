{
  "targets": [
    {
      "target_name": "node_kvm",
      "sources": [
        "native/addon.cc",
        "native/common.cc",
        "native/system.cc",
        "native/vm.cc",
        "native/vcpu.cc",
        "native/vcpu_busy.cc",
        "native/vcpu_thread.cc",
        "native/memory.cc",
        "native/file.cc",
        "native/vmm_ioctl.cc",
        "native/vm_irq.cc",
        "native/vm_state.cc",
        "native/vcpu_state.cc",
        "native/eventfd.cc",
        "native/device.cc",
        "native/exits.cc",
        "native/userfault.cc",
        "native/selftest_vm.cc",
        "native/dirty_ring.cc",
        "native/vm_msr_filter.cc"
      ],
      "include_dirs": ["<!(node -p \"require('node-addon-api').include_dir\")"],
      "defines": ["NAPI_VERSION=8", "NODE_ADDON_API_DISABLE_DEPRECATED", "NAPI_CPP_EXCEPTIONS", "NODE_API_SWALLOW_UNTHROWABLE_EXCEPTIONS"],
      "cflags!": ["-fno-exceptions"],
      "cflags_cc!": ["-fno-exceptions", "-std=gnu++17", "-std=gnu++20"],
      "cflags_cc": ["-std=c++17", "-fexceptions", "-Wall", "-Wextra", "-Werror"],
      "conditions": [
        ["OS!='linux'", { "type": "none" }]
      ]
    }
  ]
}
