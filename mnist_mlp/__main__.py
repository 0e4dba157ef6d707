from mnist_mlp.cli import main

main()
