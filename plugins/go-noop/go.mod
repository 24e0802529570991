module lkgo.example/plugins/go-noop

go 1.21
