module lkgo.example/lkgo

go 1.22
