"""Narrow, fast train.py settings on top of any config (tiny trunk, a few synthetic identities, batch 4):
the tests check the plumbing, benchmarks check speed."""

TINY_ARGS = ["--trainer.check_val_every_n_epoch", "1", "--model.backbone.init_args.trunk", "tiny",
             "--model.backbone.init_args.trunk_kwargs", "{}",
             "--data.init_args.num_train_identities", "8", "--data.init_args.images_per_identity", "4",
             "--data.init_args.num_val_identities", "6", "--data.init_args.val_pairs", "20",
             "--data.init_args.batch_size", "4", "--data.init_args.num_workers", "0"]
