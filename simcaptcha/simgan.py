"""SimGAN refiner training: schedule, tf.function steps, history buffer, sample grids, TensorBoard, resumable checkpoints."""

from __future__ import annotations

import time
from dataclasses import asdict, dataclass
import numpy as np

from .domaingap import GapReport, health_alarms, measure_gap
from .refiner import (
    ImageHistoryBuffer,
    RefinerConfig,
    build_discriminator,
    build_refiner,
    discriminator_loss,
    refiner_adversarial_loss,
    self_regularization_loss,
)
from .files import write_json_atomic
from .runs import RunDir, save_model_atomic

from .preprocess import preprocess
from .synth import Synthesizer, SyntheticPool, SyntheticStream, training_batches
from .viz import contact_sheet, save_png


@dataclass(frozen=True)
class SimGANConfig:
    steps: int = 600  # adversarial iterations, each k_g refiner and k_d discriminator updates
    pretrain_refiner_steps: int = 100  # self-regularization only
    pretrain_disc_steps: int = 50
    k_g: int = 2
    k_d: int = 1
    batch_size: int = 32
    reg_lambda: float = 5.0  # weight of the self-regularization L1
    learning_rate: float = 1e-3
    history_size: int = 2048  # refined images remembered for the discriminator
    features: int = 8
    blocks: int = 3
    disc_features: int = 32
    seed: int = 0
    sample_every: int = 100
    checkpoint_every: int = 50
    synthetic_pool: int = 0  # render this many synthetic captchas up front and draw batches from them (0: render each batch)
    gap_every: int = 0  # also measure the domain gap every this many steps, for TensorBoard (0: at the end only)
    gap_steps: int = 200  # training steps of each fresh critic that scores the gap
    gap_critics: int = 3  # critics (seeds) averaged per score: one critic's AUC moves by up to 0.09 with its seed
    gap_size: int = 1000  # synthetic captchas (and as many real ones at most) the gap is scored on

    @property
    def total_steps(self) -> int:
        return self.pretrain_refiner_steps + self.pretrain_disc_steps + self.steps

    def batches_before(self, step: int) -> int:
        """Synthetic batches consumed before global step `step` (so a resumed run reads the same stream)."""
        pre = min(step, self.pretrain_refiner_steps + self.pretrain_disc_steps)
        return pre + max(0, step - pre) * (self.k_g + self.k_d)


def gap_synthetic(synth, cfg: SimGANConfig) -> tuple[np.ndarray, list[str]]:
    """The synthetic captchas (preprocessed) and texts a run's domain gap is scored on: cfg.gap_size of
    their own seed, so refine-train and the pipeline's label check read the same ones."""
    images, texts = synth.render_batch(cfg.gap_size, (cfg.seed, 777_777_777))
    return preprocess(images, synth.spec.ink), texts


def train_refiner(cfg: SimGANConfig, real_x: np.ndarray, synth: Synthesizer, out_dir, resume: bool = False,
                  pool: SyntheticPool | None = None, progress: bool = True, log=print) -> dict:
    """Train refiner and discriminator on preprocessed real images `real_x` (N, H, W, 1) against `synth`'s
    captchas; write OUT/refiner.keras (and synth.json, spec.json: what the run was made from).

    pool: draw synthetic batches from these pre-rendered captchas (a pipeline shares one between
    stages); without it, cfg.synthetic_pool captchas are rendered here when set.
    """
    import keras
    import tensorflow as tf
    from tqdm import tqdm

    run = RunDir(out_dir)
    if resume and run.has_checkpoint():
        cfg = run.load_config(SimGANConfig)
    run.save_config(cfg)
    synth.save(run.path)
    synth.spec.save(run.path)
    keras.utils.set_random_seed(cfg.seed)

    net_cfg = RefinerConfig(cfg.features, cfg.blocks, cfg.disc_features)
    refiner, disc = build_refiner(net_cfg), build_discriminator(net_cfg)
    opt_r, opt_d = keras.optimizers.Adam(cfg.learning_rate), keras.optimizers.Adam(cfg.learning_rate)
    opt_r.build(refiner.trainable_variables)
    opt_d.build(disc.trainable_variables)
    history = ImageHistoryBuffer(cfg.history_size, seed=cfg.seed)

    start = 0
    if resume and run.has_checkpoint():
        start, extra = run.load_checkpoint({"refiner": refiner, "discriminator": disc}, {"refiner": opt_r, "discriminator": opt_d})
        history.restore(extra.get("history", np.zeros((0,))))
        log(f"resuming from step {start} of {cfg.total_steps}")

    stream = training_batches(synth, cfg.batch_size, cfg.seed, cfg.batches_before(start), pool, cfg.synthetic_pool, progress)

    @tf.function
    def pretrain_refiner_step(syn):
        with tf.GradientTape() as tape:
            loss = self_regularization_loss(syn, refiner(syn, training=True))
        opt_r.apply_gradients(zip(tape.gradient(loss, refiner.trainable_variables), refiner.trainable_variables))
        return loss

    @tf.function
    def refiner_step(syn):
        with tf.GradientTape() as tape:
            refined = refiner(syn, training=True)
            adv = refiner_adversarial_loss(disc(refined, training=False))
            reg = self_regularization_loss(syn, refined)
            loss = adv + cfg.reg_lambda * reg
        opt_r.apply_gradients(zip(tape.gradient(loss, refiner.trainable_variables), refiner.trainable_variables))
        return adv, reg

    @tf.function
    def disc_step(real, refined):
        with tf.GradientTape() as tape:
            real_logits, fake_logits = disc(real, training=True), disc(refined, training=True)
            loss = discriminator_loss(real_logits, fake_logits)
        opt_d.apply_gradients(zip(tape.gradient(loss, disc.trainable_variables), disc.trainable_variables))
        real_acc = tf.reduce_mean(tf.cast(real_logits > 0, tf.float32))
        fake_acc = tf.reduce_mean(tf.cast(fake_logits < 0, tf.float32))
        return loss, real_acc, fake_acc

    @tf.function
    def refine(syn):
        return refiner(syn, training=False)

    def real_batch(step, k):
        rng = np.random.default_rng((cfg.seed, step, k, 1))
        return tf.constant(real_x[rng.integers(0, len(real_x), cfg.batch_size)])

    def train_disc(step, k):
        refined = history.mix(refine(next(stream)[0]).numpy())
        return disc_step(real_batch(step, k), tf.constant(refined))

    sample_syn = tf.constant(next(iter(SyntheticStream(synth, 8, seed=cfg.seed + 10_000)))[0])
    sample_real = real_x[np.random.default_rng(cfg.seed).integers(0, len(real_x), 8)]

    def save_samples(step):
        refined = refine(sample_syn).numpy()
        change = np.clip((refined - sample_syn.numpy()) * 4, -1, 1)  # grey: unchanged; lighter or darker: what the refiner did
        sheet = contact_sheet([("synthetic", sample_syn.numpy()), ("refined", refined), ("refined-syn x4", change),
                               ("real", sample_real)], columns=8)
        save_png(sheet, run.samples / f"step_{step:06d}.png")
        save_png(sheet, run.samples / "latest.png")

    gap_syn, _ = gap_synthetic(synth, cfg)
    gap_real = real_x[np.random.default_rng((cfg.seed, 6)).permutation(len(real_x))[: cfg.gap_size]]

    def measure(step) -> GapReport:
        refined = np.concatenate([refine(tf.constant(gap_syn[i : i + 256])).numpy() for i in range(0, len(gap_syn), 256)])
        report = measure_gap(gap_real, gap_syn, refined, steps=cfg.gap_steps, seed=cfg.seed, critics=cfg.gap_critics)
        run.log_scalars(step, report.as_scalars())
        return report

    disc_losses: list[float] = []
    p_r, p_d = cfg.pretrain_refiner_steps, cfg.pretrain_refiner_steps + cfg.pretrain_disc_steps
    bar = tqdm(total=cfg.total_steps, initial=start, desc="refine-train", disable=not progress, dynamic_ncols=True)
    scalars: dict = {}
    t0 = time.time()
    for step in range(start, cfg.total_steps):
        if step < p_r:
            scalars = {"refiner/self_reg": float(pretrain_refiner_step(next(stream)[0]))}
        elif step < p_d:
            loss, ra, fa = train_disc(step, 0)
            scalars = {"disc/loss": float(loss), "disc/real_acc": float(ra), "disc/refined_acc": float(fa)}
        else:
            for _ in range(cfg.k_g):
                adv, reg = refiner_step(next(stream)[0])
            for k in range(cfg.k_d):
                loss, ra, fa = train_disc(step, k)
            scalars = {"refiner/adversarial": float(adv), "refiner/self_reg": float(reg), "disc/loss": float(loss), "disc/real_acc": float(ra), "disc/refined_acc": float(fa)}
            disc_losses.append(float(loss))
        done = step + 1
        bar.update(1)
        bar.set_postfix({k.split("/")[1][:8]: f"{v:.3f}" for k, v in scalars.items()})
        if done % 10 == 0:
            run.log_scalars(done, scalars)
        if done % cfg.sample_every == 0 or done == cfg.total_steps:
            save_samples(done)
        if cfg.gap_every and done % cfg.gap_every == 0 and done != cfg.total_steps:
            measure(done)
        if done % cfg.checkpoint_every == 0 or done == cfg.total_steps:
            run.save_checkpoint(done, {"refiner": refiner, "discriminator": disc}, {"refiner": opt_r, "discriminator": opt_d}, {"history": history.state()})
    bar.close()
    seconds = time.time() - t0
    save_model_atomic(refiner, run.path / "refiner.keras", synth.spec)
    report = measure(cfg.total_steps)
    alarms = health_alarms(report, disc_losses)
    write_json_atomic(run.path / "gap.json", {**asdict(report), "alarms": alarms})
    log(f"domain gap (critic ROC AUC, 0.5: indistinguishable from real): synthetic {report.synthetic_gap:.3f}, "
        f"refined {report.refined_gap:.3f}; mean change {report.mean_change:.4f}")
    for line in alarms:
        log(f"alarm: {line}")
    return {**scalars, "seconds": seconds, "gap": asdict(report), "alarms": alarms, "config": asdict(cfg)}
