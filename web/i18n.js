// Interface text in English and Chinese. Elements carry data-i18n="key" (text) or data-i18n-label="key" (aria-label); messages built in code use t(key, vars).
export const STRINGS = {
  en: {
    tagline: 'Watch 3D molecules condense out of noise: EDM (E(3)-equivariant diffusion) with its EGNN denoiser, running in your browser.',
    language: 'Language', generate: 'Generate', pause: 'Pause', resume: 'Resume', stop: 'Stop',
    atoms: 'Atoms', steps: 'Steps', batch: 'Molecules', seed: 'Seed', randomSeed: 'Random seed',
    equivariance: 'Equivariance view', backend: 'Backend', qm9: 'QM9 distribution',
    chainLeft: 'Chain from z_T', chainRight: 'Chain from g·z_T (drag or arrow keys to rotate g)',
    rightViewLabel: 'Chain from g·z_T. Arrow keys rotate g by 15 degrees.',
    gRotate: 'Random rotation', gReflect: 'Reflection', gTranslate: 'Translation', gPermute: 'Permute atoms', gReset: 'Identity',
    deviation: 'Largest deviation |g⁻¹·right − left|',
    explain: 'The denoiser is an E(n)-equivariant graph network: rotating, reflecting, translating or renumbering its input rotates, reflects, translates or renumbers its output the same way. The right chain starts from g·z_T and every noise draw is transformed by the same g, so each of its frames is g applied to the left frame. The ghost over the left molecule is g⁻¹ applied to the right one; they coincide up to float rounding (about 1e-5 Å). Rotating g mid-run restarts the right chain from g applied to the left chain’s current state.',
    timeline: 'Timeline', exportTraj: 'Trajectory (XYZ)', selftestTitle: 'Self-test',
    loading: 'Loading the model…', downloading: 'Downloading weights: {pct} %', verifying: 'Checking the weights (SHA-256)…',
    ready: 'Ready. Press Generate.', ignoredParam: 'The link’s {name}={value} is not available; using {used}.', running: 'Denoising…', paused: 'Paused.', stopped: 'Stopped.',
    done: 'Done: {n} molecule(s).', progress: 'step {step} of {total} (t = {t}), {rate} steps/s',
    cpuBackend: 'CPU (WebAssembly)', gpuBackend: 'WebGPU: {adapter}', fallback: 'CPU (WebAssembly); WebGPU unavailable: {reason}',
    gpuLost: 'The GPU device was lost ({reason}); continuing on the CPU.',
    gpuFailed: 'A GPU computation failed ({reason}); continuing on the CPU.',
    fallbackLost: 'CPU (WebAssembly); the GPU device was lost: {reason}',
    fallbackFailed: 'CPU (WebAssembly); a GPU computation failed: {reason}',
    error: 'Error: {msg}', info: '{formula}: {n} atoms, {stable} of {n} atoms stable, molecule {mstable}',
    stable: 'stable', unstable: 'not stable', diverged: 'diverged (non-finite)',
    permuteNeedsSize: 'Permuting atoms needs molecules of one size: choose a fixed number of atoms.',
  },
  zh: {
    tagline: '看三维分子从噪声中凝聚成形：EDM（E(3) 等变扩散模型）及其 EGNN 去噪网络，完全在浏览器中运行。',
    language: '语言', generate: '生成', pause: '暂停', resume: '继续', stop: '停止',
    atoms: '原子数', steps: '步数', batch: '分子数', seed: '随机种子', randomSeed: '随机种子',
    equivariance: '等变性视图', backend: '后端', qm9: 'QM9 分布',
    chainLeft: '从 z_T 出发的链', chainRight: '从 g·z_T 出发的链（拖动或用方向键旋转 g）',
    rightViewLabel: '从 g·z_T 出发的链。方向键将 g 旋转 15 度。',
    gRotate: '随机旋转', gReflect: '镜像反射', gTranslate: '平移', gPermute: '置换原子顺序', gReset: '恒等变换',
    deviation: '最大偏差 |g⁻¹·右 − 左|',
    explain: '去噪网络是一个 E(n) 等变图神经网络：对输入做旋转、反射、平移或原子重新编号，输出也会以完全相同的方式变化。右侧的链从 g·z_T 出发，并且每一步的噪声都经过同一个 g 变换，所以它的每一帧都等于 g 作用在左侧对应帧上。叠加在左侧分子上的虚影是 g⁻¹ 作用在右侧分子上的结果；两者只差浮点舍入误差（约 1e-5 Å）。在运行中旋转 g，右侧的链会从 g 作用于左侧当前状态的位置重新开始。',
    timeline: '时间轴', exportTraj: '轨迹（XYZ）', selftestTitle: '自检',
    loading: '正在加载模型…', downloading: '正在下载权重：{pct} %', verifying: '正在校验权重（SHA-256）…',
    ready: '就绪。请点击“生成”。', ignoredParam: '链接中的 {name}={value} 不可用，改用 {used}。', running: '去噪中…', paused: '已暂停。', stopped: '已停止。',
    done: '完成：{n} 个分子。', progress: '第 {step} / {total} 步（t = {t}），每秒 {rate} 步',
    cpuBackend: 'CPU（WebAssembly）', gpuBackend: 'WebGPU：{adapter}', fallback: 'CPU（WebAssembly）；WebGPU 不可用：{reason}',
    gpuLost: 'GPU 设备丢失（{reason}）；已切换到 CPU 继续。',
    gpuFailed: 'GPU 计算失败（{reason}）；已切换到 CPU 继续。',
    fallbackLost: 'CPU（WebAssembly）；GPU 设备丢失：{reason}',
    fallbackFailed: 'CPU（WebAssembly）；GPU 计算失败：{reason}',
    error: '错误：{msg}', info: '{formula}：{n} 个原子，{stable} / {n} 个原子稳定，分子{mstable}',
    stable: '稳定', unstable: '不稳定', diverged: '发散（非有限值）',
    permuteNeedsSize: '置换原子需要所有分子的原子数相同：请选择固定的原子数。',
  },
};

let lang = 'en';

export function setLanguage(l) {
  lang = STRINGS[l] ? l : 'en';
  document.documentElement.lang = lang === 'zh' ? 'zh-CN' : 'en';
  for (const el of document.querySelectorAll('[data-i18n]')) {
    const s = STRINGS[lang][el.dataset.i18n];
    if (s) el.textContent = s;
  }
  for (const el of document.querySelectorAll('[data-i18n-label]')) {
    const s = STRINGS[lang][el.dataset.i18nLabel];
    if (s) el.setAttribute('aria-label', s);
  }
  return lang;
}

export function t(key, vars = {}) {
  const s = STRINGS[lang][key] ?? STRINGS.en[key] ?? key;
  return s.replace(/\{(\w+)\}/g, (_, k) => String(vars[k] ?? ''));
}
