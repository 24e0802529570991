module lkgo.example/plugins/go-noop

go 1.22

require lkgo.example/lkgo v0.0.0

replace lkgo.example/lkgo => ../../plugin-api/go
